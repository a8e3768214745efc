/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * sanprov_perf: perftest-style RDMA latency and bandwidth over the
 * verbs_backend data path.
 *
 *   server:    sanprov_perf [options]
 *   client:    sanprov_perf [options] SERVER
 *   one host:  sanprov_perf --loopback [options]   (forks the server)
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "perf.h"
#include "vb.h"

#define SEP                                                                                        \
	"---------------------------------------------------------------------------------------"
#define DEFAULT_PORT 18515
#define MAX_ALL_SIZE (1u << 23)

struct cli {
	FILE *csv;
	const char *mem;
	const char *dev_name;
	const char *backend;
	bool csv_header_done;
};

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "Usage: sanprov_perf [options] [SERVER]\n"
	    "  Without SERVER: wait for a client (serve one run; four with --test all).\n"
	    "  With SERVER: run the tests against it and print perftest-style results.\n"
	    "\n"
	    "Options:\n"
	    "  -T, --test=NAME       write_lat, read_lat, write_bw, read_bw or all (write_lat)\n"
	    "  -s, --size=BYTES      message size (2 for latency, 65536 for bandwidth);\n"
	    "                        with -a the largest size (8388608)\n"
	    "  -a, --all             every power of two from 2 to --size\n"
	    "  -n, --iters=N         iterations per size (1000 latency, 5000 bandwidth)\n"
	    "  -t, --tx-depth=N      operations in flight in bandwidth tests (128)\n"
	    "  -p, --port=N          listening port (%u)\n"
	    "  -b, --backend=NAME    backend (SANPROV_BACKEND, default %s)\n"
	    "  -d, --ib-dev=NAME     device of the backend (SANPROV_DEVICE)\n"
	    "  -m, --mem=KIND        buffers: shared (vb_buf_alloc, default) or private (malloc)\n"
	    "  -R, --reg=MODE        latency tests: register local buffers once (default),\n"
	    "                        per operation (op), or per operation through the\n"
	    "                        registration cache (cache); both sides follow the client\n"
	    "  -L, --loopback        run the server in a child process on this host\n"
	    "  -A, --addr=IPV4       with -L: the address to use (127.0.0.1; a verbs\n"
	    "                        device needs the address of its own netdev)\n"
	    "  -c, --csv=FILE        also write every row to FILE as CSV\n"
	    "  -q, --quiet           no progress lines on stderr\n"
	    "  -h, --help            this text\n",
	    DEFAULT_PORT, VB_DEFAULT_BACKEND);
}

static int parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || *end || v < min || v > max)
		return EINVAL;
	*out = (uint32_t)v;
	return 0;
}

static void header(const struct perf_opts *o, const struct cli *cli)
{
	static const char *const titles[PERF_N_TESTS] = {
		[PERF_WRITE_LAT] = "RDMA_Write Latency Test",
		[PERF_READ_LAT] = "RDMA_Read Latency Test",
		[PERF_WRITE_BW] = "RDMA_Write BW Test",
		[PERF_READ_BW] = "RDMA_Read BW Test",
	};

	printf("%s\n", SEP);
	printf("                    %s\n", titles[o->test]);
	printf(" Backend         : %-16s Device         : %s\n", cli->backend, cli->dev_name);
	printf(" Number of qps   : 1                Transport type : RC\n");
	printf(" Memory          : %-16s TX depth       : %u\n", cli->mem,
	       perf_is_lat(o->test) ? 1 : o->tx_depth);
	printf(" Registration    : %-16s Data ex. method: connection private data\n",
	       perf_reg_names[o->reg]);
	printf("%s\n", SEP);
	if (perf_is_lat(o->test))
		printf(" #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    "
		       "t_avg[usec]    t_stdev[usec]   99%% percentile[usec]   99.9%% "
		       "percentile[usec] \n");
	else
		printf(" #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   "
		       "MsgRate[Mpps]\n");
	fflush(stdout);
}

static void print_row(const struct perf_opts *o, const struct perf_row *r, void *arg)
{
	struct cli *cli = arg;

	if (perf_is_lat(o->test))
		printf(" %-7u %-10u      %-7.2f        %-7.2f      %-7.2f            %-7.2f        "
		       "%-7.2f         %-7.2f                 %-7.2f\n",
		       r->size, r->iters, r->t_min, r->t_max, r->t_typical, r->t_avg, r->t_stdev,
		       r->t_p99, r->t_p999);
	else
		printf(" %-10u %-10u     %-14.2f     %-14.2f       %-.6f\n", r->size, r->iters,
		       r->bw_peak, r->bw_avg, r->msg_rate);
	fflush(stdout);
	if (!cli->csv)
		return;
	if (!cli->csv_header_done) {
		fprintf(
		    cli->csv,
		    "test,backend,device,memory,registration,bytes,iterations,t_min_us,t_max_us,"
		    "t_typical_us,t_avg_us,t_stdev_us,t_p99_us,t_p999_us,"
		    "bw_peak_MBps,bw_avg_MBps,msg_rate_Mpps\n");
		cli->csv_header_done = true;
	}
	fprintf(cli->csv,
		"%s,%s,%s,%s,%s,%u,%u,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.2f,%.2f,%.6f\n",
		perf_test_names[o->test], cli->backend, cli->dev_name, cli->mem,
		perf_reg_names[o->reg], r->size, r->iters, r->t_min, r->t_max, r->t_typical,
		r->t_avg, r->t_stdev, r->t_p99, r->t_p999, r->bw_peak, r->bw_avg, r->msg_rate);
	fflush(cli->csv);
}

/* Name the device the run will use, for the header. */
static int describe(struct perf_opts *o, struct cli *cli, char *dev_name, size_t len)
{
	struct vb_device *dev = vb_open_device(o->backend, o->device);
	struct vb_device_attr da;

	if (!dev)
		return errno;
	if (vb_query_device(dev, &da)) {
		vb_close_device(dev);
		return EIO;
	}
	snprintf(dev_name, len, "%s", da.name);
	cli->backend = dev->ops->name;
	cli->dev_name = dev_name;
	return vb_close_device(dev);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "test", required_argument, NULL, 'T' },
		{ "size", required_argument, NULL, 's' },
		{ "all", no_argument, NULL, 'a' },
		{ "iters", required_argument, NULL, 'n' },
		{ "tx-depth", required_argument, NULL, 't' },
		{ "port", required_argument, NULL, 'p' },
		{ "backend", required_argument, NULL, 'b' },
		{ "ib-dev", required_argument, NULL, 'd' },
		{ "mem", required_argument, NULL, 'm' },
		{ "reg", required_argument, NULL, 'R' },
		{ "loopback", no_argument, NULL, 'L' },
		{ "addr", required_argument, NULL, 'A' },
		{ "csv", required_argument, NULL, 'c' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct perf_opts o = {
		.test = PERF_WRITE_LAT, .port = DEFAULT_PORT, .tx_depth = 128, .port_fd = -1
	};
	struct cli cli = { .mem = "shared" };
	bool all_tests = false, loopback = false, size_given = false;
	uint32_t size = 0, port;
	const char *csv_path = NULL;
	char dev_name[VB_NAME_MAX];
	int opt, ret = 0;

	while ((opt = getopt_long(argc, argv, "T:s:an:t:p:b:d:m:R:LA:c:qh", longopts, NULL)) !=
	       -1) {
		switch (opt) {
		case 'T':
			all_tests = !strcmp(optarg, "all");
			for (o.test = 0; !all_tests && o.test < PERF_N_TESTS; o.test++)
				if (!strcmp(optarg, perf_test_names[o.test]))
					break;
			if (!all_tests && o.test == PERF_N_TESTS) {
				fprintf(stderr, "sanprov_perf: unknown test '%s'\n", optarg);
				return 2;
			}
			break;
		case 's':
			if (parse_u32(optarg, 1, 1u << 30, &size)) {
				fprintf(stderr, "sanprov_perf: size must be 1..1073741824\n");
				return 2;
			}
			size_given = true;
			break;
		case 'a':
			o.all_sizes = true;
			break;
		case 'n':
			if (parse_u32(optarg, 1, 100000000, &o.iters)) {
				fprintf(stderr, "sanprov_perf: iterations must be 1..100000000\n");
				return 2;
			}
			break;
		case 't':
			if (parse_u32(optarg, 1, 8192, &o.tx_depth)) {
				fprintf(stderr, "sanprov_perf: tx depth must be 1..8192\n");
				return 2;
			}
			break;
		case 'p':
			if (parse_u32(optarg, 1, 65535, &port)) {
				fprintf(stderr, "sanprov_perf: port must be 1..65535\n");
				return 2;
			}
			o.port = (uint16_t)port;
			break;
		case 'b':
			o.backend = optarg;
			break;
		case 'd':
			o.device = optarg;
			break;
		case 'm':
			if (strcmp(optarg, "shared") && strcmp(optarg, "private")) {
				fprintf(stderr, "sanprov_perf: --mem is shared or private\n");
				return 2;
			}
			o.private_mem = !strcmp(optarg, "private");
			cli.mem = optarg;
			break;
		case 'R':
			for (o.reg = 0; o.reg < PERF_N_REGS; o.reg++)
				if (!strcmp(optarg, perf_reg_names[o.reg]))
					break;
			if (o.reg == PERF_N_REGS) {
				fprintf(stderr, "sanprov_perf: --reg is once, op or cache\n");
				return 2;
			}
			break;
		case 'L':
			loopback = true;
			break;
		case 'A':
			o.loopback_addr = optarg;
			break;
		case 'c':
			csv_path = optarg;
			break;
		case 'q':
			o.quiet = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc)
		o.server = argv[optind++];
	if (optind < argc || (loopback && o.server)) {
		usage(stderr);
		return 2;
	}
	if (o.reg != PERF_REG_ONCE && (all_tests || !perf_is_lat(o.test))) {
		fprintf(stderr, "sanprov_perf: --reg=%s is for write_lat and read_lat\n",
			perf_reg_names[o.reg]);
		return 2;
	}
	ret = describe(&o, &cli, dev_name, sizeof(dev_name));
	if (ret) {
		fprintf(stderr, "sanprov_perf: cannot open backend %s: %s\n",
			o.backend ? o.backend : "(default)", strerror(ret));
		return 1;
	}
	if (csv_path) {
		cli.csv = fopen(csv_path, "w");
		if (!cli.csv) {
			fprintf(stderr, "sanprov_perf: %s: %s\n", csv_path, strerror(errno));
			return 1;
		}
	}

	/* A server must hold the largest message any client may ask for. */
	if (!o.server && !loopback) {
		o.max_size = size_given && size > MAX_ALL_SIZE ? size : MAX_ALL_SIZE;
		for (int i = 0; i < (all_tests ? PERF_N_TESTS : 1) && !ret; i++) {
			fprintf(stderr, "sanprov_perf: waiting for a client on port %u\n", o.port);
			ret = perf_server(&o);
		}
		if (ret)
			fprintf(stderr, "sanprov_perf: %s\n", strerror(ret));
		return ret ? 1 : 0;
	}

	for (int t = 0; t < PERF_N_TESTS && !ret; t++) {
		if (all_tests)
			o.test = (enum perf_test)t;
		else if (t)
			break;
		o.max_size = size_given		   ? size
			     : o.all_sizes	   ? MAX_ALL_SIZE
			     : perf_is_lat(o.test) ? 2
						   : 65536;
		o.min_size = 2;
		header(&o, &cli);
		ret = loopback ? perf_loopback(&o, print_row, &cli)
			       : perf_client(&o, print_row, &cli);
		printf("%s\n", SEP);
	}
	if (cli.csv)
		fclose(cli.csv);
	if (ret) {
		fprintf(stderr, "sanprov_perf: %s\n", strerror(ret));
		return 1;
	}
	return 0;
}
