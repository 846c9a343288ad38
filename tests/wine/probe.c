/* The iphlpapi calls of exporter/windows/iphlpapi.py, made from C and run under Wine by
 * tests/test_windows_wine.py: each structure is written raw to a file of OUTDIR, for the
 * Python decoders (exporter/windows/decode.py) to read.
 *
 *   probe.exe OUTDIR [ex]
 *
 * The 64-bit GetTcpStatisticsEx2/GetUdpStatisticsEx2 are looked up with GetProcAddress, as the
 * ctypes module looks them up with getattr, and GetTcpStatisticsEx/GetUdpStatisticsEx are
 * called where they are absent (or when "ex" is given): tcp.api and udp.api say which answered.
 * A call that fails leaves NAME.err with its code; the exit status is the number of failures.
 *
 * Built with: x86_64-w64-mingw32-gcc -O1 -o probe.exe probe.c -liphlpapi */
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>
#include <iphlpapi.h>
#include <netioapi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mib2.h"

static const char *outdir;
static int failures;

static void put(const char *name, const void *data, size_t size) {
  char path[1024];
  FILE *f;
  snprintf(path, sizeof(path), "%s\\%s", outdir, name);
  f = fopen(path, "wb");
  if (!f || fwrite(data, 1, size, f) != size) {
    fprintf(stderr, "probe: cannot write %s\n", path);
    exit(100);
  }
  fclose(f);
}

static void failed(const char *name, unsigned long code) {
  char text[32], file[64];
  snprintf(text, sizeof(text), "%lu\n", code);
  snprintf(file, sizeof(file), "%s.err", name);
  put(file, text, strlen(text));
  failures++;
}

static void stats(const char *name, ULONG rc, const void *data, size_t size) {
  if (rc != NO_ERROR)
    failed(name, rc);
  else
    put(name, data, size);
}

/* One statistics call of family af (loop index i) into a zeroed TYPE s, written to
 * PREFIX4.bin or PREFIX6.bin. */
#define STATS(TYPE, PREFIX, CALL)                                         \
  do {                                                                    \
    TYPE s;                                                               \
    memset(&s, 0, sizeof(s));                                             \
    snprintf(name, sizeof(name), PREFIX "%s.bin", suffix[i]);            \
    stats(name, CALL, &s, sizeof(s));                                     \
  } while (0)

/* A MIB_*_TABLE2 table that CALL allocates into TYPE *t: NumEntries, padding to the rows'
 * 8-byte alignment, the rows of ROW; written as that many bytes to NAME, as
 * exporter/windows/iphlpapi.py copies them, and freed. */
#define TABLE2(NAME, TYPE, ROW, CALL)                                              \
  do {                                                                             \
    TYPE *t = NULL;                                                                \
    ULONG rc = CALL;                                                               \
    if (rc != NO_ERROR)                                                            \
      failed(NAME, rc);                                                            \
    else                                                                           \
      put(NAME, t, FIELD_OFFSET(TYPE, Table) + (size_t)t->NumEntries * sizeof(ROW)); \
    if (t)                                                                         \
      FreeMibTable(t);                                                             \
  } while (0)

/* GetExtendedTcpTable/GetExtendedUdpTable: ask for the size, then read into a buffer a
 * quarter and 4 KiB larger, again while the table outgrows it (ERROR_INSUFFICIENT_BUFFER), at
 * most 8 times: iphlpapi.py's slack() and SIZING_TRIES. */
static void extended(const char *name, int tcp, ULONG family, int table_class) {
  DWORD size = 0, rc = ERROR_INSUFFICIENT_BUFFER;
  void *buf = NULL;
  int tries;
  for (tries = 0; tries < 8 && rc == ERROR_INSUFFICIENT_BUFFER; tries++) {
    free(buf);
    if (size)
      size += size / 4 + 4096;
    buf = size ? malloc(size) : NULL;
    rc = tcp ? GetExtendedTcpTable(buf, &size, FALSE, family, (TCP_TABLE_CLASS)table_class, 0)
             : GetExtendedUdpTable(buf, &size, FALSE, family, (UDP_TABLE_CLASS)table_class, 0);
  }
  if (rc != NO_ERROR)
    failed(name, rc);
  else
    put(name, buf, size);
  free(buf);
}

int main(int argc, char **argv) {
  HMODULE dll = LoadLibraryA("iphlpapi.dll");
  int fallback = argc > 2 && strcmp(argv[2], "ex") == 0;
  GetTcpStatisticsEx2_t tcp2 = NULL;
  GetUdpStatisticsEx2_t udp2 = NULL;
  static const ULONG families[2] = {AF_INET, AF_INET6};
  static const char *const suffix[2] = {"4", "6"};
  char name[64];
  int i;

  if (argc < 2 || !dll) {
    fprintf(stderr, "usage: probe.exe OUTDIR [ex]\n");
    return 100;
  }
  outdir = argv[1];
  if (!fallback) {
    tcp2 = (GetTcpStatisticsEx2_t)(void (*)(void))GetProcAddress(dll, "GetTcpStatisticsEx2");
    udp2 = (GetUdpStatisticsEx2_t)(void (*)(void))GetProcAddress(dll, "GetUdpStatisticsEx2");
  }
  put("tcp.api", tcp2 ? "MIB_TCPSTATS2" : "MIB_TCPSTATS", tcp2 ? 13 : 12);
  put("udp.api", udp2 ? "MIB_UDPSTATS2" : "MIB_UDPSTATS", udp2 ? 13 : 12);

  for (i = 0; i < 2; i++) {
    ULONG af = families[i];
    if (tcp2)
      STATS(MIB_TCPSTATS2, "tcp", tcp2(&s, (USHORT)af));
    else
      STATS(MIB_TCPSTATS, "tcp", GetTcpStatisticsEx(&s, af));
    if (udp2)
      STATS(MIB_UDPSTATS2, "udp", udp2(&s, (USHORT)af));
    else
      STATS(MIB_UDPSTATS, "udp", GetUdpStatisticsEx(&s, af));
    STATS(MIB_IPSTATS, "ip", GetIpStatisticsEx(&s, af));
    STATS(MIB_ICMP_EX, "icmp", GetIcmpStatisticsEx(&s, af));
    snprintf(name, sizeof(name), "tcptable%s.bin", suffix[i]);
    extended(name, 1, af, TCP_TABLE_OWNER_PID_ALL);
    snprintf(name, sizeof(name), "udptable%s.bin", suffix[i]);
    extended(name, 0, af, UDP_TABLE_OWNER_PID);
  }

  TABLE2("route.bin", MIB_IPFORWARD_TABLE2, MIB_IPFORWARD_ROW2, GetIpForwardTable2(AF_UNSPEC, &t));
  TABLE2("if.bin", MIB_IF_TABLE2, MIB_IF_ROW2, GetIfTable2(&t));
  return failures;
}
