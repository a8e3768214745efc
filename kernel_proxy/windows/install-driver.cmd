@echo off
rem Load or remove sanprov_proxy.sys on a Windows host (x64), as administrator.
rem
rem The driver is test-signed: once per host, "bcdedit /set testsigning on" and a
rem reboot, then sign the image with a test certificate, for example
rem   makecert -r -pe -ss PrivateCertStore -n "CN=sanprov test" sanprov-test.cer
rem   signtool sign /fd sha256 /s PrivateCertStore /n "sanprov test" sanprov_proxy.sys
rem The image is linked with FORCE_INTEGRITY (its process-notify routine needs it):
rem unsigned, it does not load.
rem
rem   install-driver.cmd install [PATH\sanprov_proxy.sys]   copy, create the service, start it
rem   install-driver.cmd stop | start | uninstall | status
setlocal
set SVC=sanprov_proxy
set DEST=%SystemRoot%\System32\drivers\sanprov_proxy.sys

if /i "%1"=="install" goto install
if /i "%1"=="start" goto start
if /i "%1"=="stop" goto stop
if /i "%1"=="uninstall" goto uninstall
if /i "%1"=="status" goto status
echo usage: install-driver.cmd install [sys] ^| start ^| stop ^| uninstall ^| status
exit /b 2

:install
set SRC=%~2
if "%SRC%"=="" set SRC=%~dp0sanprov_proxy.sys
if not exist "%SRC%" (echo install-driver: %SRC% not found & exit /b 1)
copy /y "%SRC%" "%DEST%" >nul || exit /b 1
sc query %SVC% >nul 2>&1 || sc create %SVC% type= kernel start= demand error= normal binPath= "%DEST%" DisplayName= "sanprov kernel proxy" || exit /b 1
goto start

:start
sc start %SVC%
exit /b %errorlevel%

:stop
sc stop %SVC%
exit /b %errorlevel%

:uninstall
sc stop %SVC% >nul 2>&1
sc delete %SVC% || exit /b 1
del /f "%DEST%"
exit /b 0

:status
sc query %SVC%
exit /b %errorlevel%
