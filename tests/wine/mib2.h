/* What the mingw-w64 headers (10.0) lack: the 64-bit TCP and UDP statistics of Windows 10
 * 1703+, as tcpmib.h, udpmib.h and iphlpapi.h of the Windows SDK declare them
 * (https://learn.microsoft.com/windows/win32/api/tcpmib/ns-tcpmib-mib_tcpstats2,
 *  https://learn.microsoft.com/windows/win32/api/udpmib/ns-udpmib-mib_udpstats2,
 *  https://learn.microsoft.com/windows/win32/api/iphlpapi/nf-iphlpapi-gettcpstatisticsex2). */
#ifndef NETSTAT_EXPORTER_MIB2_H
#define NETSTAT_EXPORTER_MIB2_H

#include <windows.h>

typedef struct _MIB_TCPSTATS2 {
  DWORD RtoAlgorithm; /* TCP_RTO_ALGORITHM, an enum: 4 bytes */
  DWORD dwRtoMin;
  DWORD dwRtoMax;
  DWORD dwMaxConn;
  DWORD dwActiveOpens;
  DWORD dwPassiveOpens;
  DWORD dwAttemptFails;
  DWORD dwEstabResets;
  DWORD dwCurrEstab;
  DWORD64 dw64InSegs;
  DWORD64 dw64OutSegs;
  DWORD dwRetransSegs;
  DWORD dwInErrs;
  DWORD dwOutRsts;
  DWORD dwNumConns;
} MIB_TCPSTATS2;

typedef struct _MIB_UDPSTATS2 {
  DWORD64 dw64InDatagrams;
  DWORD dwNoPorts;
  DWORD dwInErrors;
  DWORD64 dw64OutDatagrams;
  DWORD dwNumAddrs;
} MIB_UDPSTATS2;

/* ULONG WINAPI GetTcpStatisticsEx2(PMIB_TCPSTATS2 Statistics, ADDRESS_FAMILY Family);
 * ULONG WINAPI GetUdpStatisticsEx2(PMIB_UDPSTATS2 Statistics, ADDRESS_FAMILY Family); */
typedef ULONG (WINAPI *GetTcpStatisticsEx2_t)(MIB_TCPSTATS2 *, USHORT);
typedef ULONG (WINAPI *GetUdpStatisticsEx2_t)(MIB_UDPSTATS2 *, USHORT);

#endif
