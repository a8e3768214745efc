/* SPDX-License-Identifier: BSD-2-Clause */
/* The SAN extension functions' GUIDs (ws2san.h's WSAID_*). */
#include "sp_spi.h"

#define SAN_GUID(last)                                                                             \
	{                                                                                          \
		0xC0B422F0u + (last), 0xF58C, 0x11d1,                                              \
		{                                                                                  \
			0xAD, 0x6C, 0x00, 0xC0, 0x4F, 0xA3, 0x4A, 0x2D                             \
		}                                                                                  \
	}

const struct sp_guid sp_guid_register_memory = SAN_GUID(5);
const struct sp_guid sp_guid_deregister_memory = SAN_GUID(6);
const struct sp_guid sp_guid_register_rdma_memory = SAN_GUID(7);
const struct sp_guid sp_guid_deregister_rdma_memory = SAN_GUID(8);
const struct sp_guid sp_guid_rdma_write = SAN_GUID(9);
const struct sp_guid sp_guid_rdma_read = SAN_GUID(10);
const struct sp_guid sp_guid_memory_registration_cache_callback = {
	0xE5DA4AF8u, 0xD824, 0x48CD, { 0xA7, 0x99, 0x63, 0x37, 0xA9, 0x8E, 0xD2, 0xAF }
};

/* Not Microsoft's: sanprov's statistics (sp_stats_query_fn). */
const struct sp_guid sp_guid_stats_query = {
	0x6F2A9B32u, 0x7A4F, 0x4035, { 0x94, 0xA9, 0xD5, 0xE6, 0x08, 0xA9, 0xE4, 0xD4 }
};

/* Not Microsoft's: sanprov's completion processing on the caller's thread (sp_progress_fn). */
const struct sp_guid sp_guid_progress = {
	0x3C1E5D07u, 0x9B2A, 0x4F6E, { 0x8D, 0x41, 0x7A, 0x0C, 0x52, 0xE3, 0x96, 0x1B }
};
