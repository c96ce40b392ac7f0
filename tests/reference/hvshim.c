// SPDX-License-Identifier: GPL-2.0-only
/*
 * hvshim.c - LD_PRELOAD shim that lets the unmodified reference C daemons
 * (Debian's hyperv-daemons: hv_kvp_daemon, hv_vss_daemon, hv_fcopy_daemon)
 * talk to the hv_utils transport simulator instead of the kernel.
 *
 * Build: gcc -shared -fPIC -O2 -o hvshim.so hvshim.c -ldl
 *
 * - open()/openat() and their 64-bit and fortified (__open_2 ...) variants of
 *   a path under /dev/vmbus/ return a SOCK_SEQPACKET socket connected to
 *   $HVSHIM_DIR/<basename> (e.g. $HVSHIM_DIR/hv_kvp).  SEQPACKET keeps message
 *   boundaries, like the char device's one-message-per-read/write.
 * - pread()/pwrite() on a socket fail with ESPIPE; the char device ignores
 *   the offset, and hv_fcopy_daemon uses pread/pwrite on it, so on ESPIPE for
 *   a socket fd they fall back to read()/write().
 * - openlog()/syslog()/vsyslog()/__syslog_chk()/__vsyslog_chk() additionally
 *   write "<LEVEL>IDENT: message\n" to stderr (one write() per line) so tests
 *   can compare log texts.  Trailing newlines of the message are dropped (some
 *   upstream formats end in "\n") before the single terminating one.  Set
 *   HVSHIM_NO_SYSLOG=1 to not forward to the real syslog.
 *
 * Nothing else is redirected: tests run the daemons in a private mount
 * namespace with tmpfs on /var/lib/hyperv etc.
 */
#define _GNU_SOURCE
#undef _FORTIFY_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#define VMBUS_PREFIX "/dev/vmbus/"

/* Resolve the next definition of a symbol once; abort loudly if missing, since
 * silently failing would make the reference daemon misbehave in odd ways. */
static void *next_sym(const char *name)
{
	void *p = dlsym(RTLD_NEXT, name);

	if (!p) {
		static const char msg[] = "hvshim: dlsym failed\n";

		(void)!write(2, msg, sizeof(msg) - 1);
		abort();
	}
	return p;
}

/* Declare and lazily resolve real_<name>, a pointer to the next definition. */
#define REAL(name, ret, args) \
	static ret (*real_##name) args; \
	if (!real_##name) \
		real_##name = (ret (*) args)next_sym(#name)

static int is_vmbus(const char *path)
{
	return path && strncmp(path, VMBUS_PREFIX, sizeof(VMBUS_PREFIX) - 1) == 0;
}

/* Connect to $HVSHIM_DIR/<basename of path>; -1 with errno on failure. */
static int shim_connect(const char *path)
{
	const char *dir = getenv("HVSHIM_DIR");
	const char *base = strrchr(path, '/') + 1;
	struct sockaddr_un sa;
	int fd, n, saved;

	if (!dir || !*dir) {
		/* Never fall through to a real /dev/vmbus node by accident. */
		static const char msg[] = "hvshim: HVSHIM_DIR not set\n";

		(void)!write(2, msg, sizeof(msg) - 1);
		errno = ENOENT;
		return -1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", dir, base);
	if (n < 0 || (size_t)n >= sizeof(sa.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

/* The mode argument is only present when the flags require it. */
#define GET_MODE(flags, last) \
	mode_t mode = 0; \
	if ((flags) & (O_CREAT | __O_TMPFILE)) { \
		va_list ap; \
		va_start(ap, last); \
		mode = (mode_t)va_arg(ap, int); \
		va_end(ap); \
	}

int open(const char *path, int flags, ...)
{
	REAL(open, int, (const char *, int, ...));
	GET_MODE(flags, flags);
	if (is_vmbus(path))
		return shim_connect(path);
	return real_open(path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
	REAL(open64, int, (const char *, int, ...));
	GET_MODE(flags, flags);
	if (is_vmbus(path))
		return shim_connect(path);
	return real_open64(path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...)
{
	REAL(openat, int, (int, const char *, int, ...));
	GET_MODE(flags, flags);
	if (is_vmbus(path))
		return shim_connect(path);
	return real_openat(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
	REAL(openat64, int, (int, const char *, int, ...));
	GET_MODE(flags, flags);
	if (is_vmbus(path))
		return shim_connect(path);
	return real_openat64(dirfd, path, flags, mode);
}

int __open_2(const char *path, int flags)
{
	REAL(__open_2, int, (const char *, int));
	if (is_vmbus(path))
		return shim_connect(path);
	return real___open_2(path, flags);
}

int __open64_2(const char *path, int flags)
{
	REAL(__open64_2, int, (const char *, int));
	if (is_vmbus(path))
		return shim_connect(path);
	return real___open64_2(path, flags);
}

int __openat_2(int dirfd, const char *path, int flags)
{
	REAL(__openat_2, int, (int, const char *, int));
	if (is_vmbus(path))
		return shim_connect(path);
	return real___openat_2(dirfd, path, flags);
}

int __openat64_2(int dirfd, const char *path, int flags)
{
	REAL(__openat64_2, int, (int, const char *, int));
	if (is_vmbus(path))
		return shim_connect(path);
	return real___openat64_2(dirfd, path, flags);
}

static int is_socket(int fd)
{
	struct stat st;

	return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

ssize_t pread(int fd, void *buf, size_t count, off_t off)
{
	REAL(pread, ssize_t, (int, void *, size_t, off_t));
	ssize_t r = real_pread(fd, buf, count, off);

	if (r < 0 && errno == ESPIPE && is_socket(fd))
		return read(fd, buf, count);
	return r;
}

ssize_t pread64(int fd, void *buf, size_t count, off64_t off)
{
	REAL(pread64, ssize_t, (int, void *, size_t, off64_t));
	ssize_t r = real_pread64(fd, buf, count, off);

	if (r < 0 && errno == ESPIPE && is_socket(fd))
		return read(fd, buf, count);
	return r;
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t off)
{
	REAL(pwrite, ssize_t, (int, const void *, size_t, off_t));
	ssize_t r = real_pwrite(fd, buf, count, off);

	if (r < 0 && errno == ESPIPE && is_socket(fd))
		return write(fd, buf, count);
	return r;
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off64_t off)
{
	REAL(pwrite64, ssize_t, (int, const void *, size_t, off64_t));
	ssize_t r = real_pwrite64(fd, buf, count, off);

	if (r < 0 && errno == ESPIPE && is_socket(fd))
		return write(fd, buf, count);
	return r;
}

/* ---- syslog mirroring ---- */

static char shim_ident[64];

static int forward_to_syslog(void)
{
	const char *v = getenv("HVSHIM_NO_SYSLOG");

	return !(v && *v && strcmp(v, "0") != 0);
}

void openlog(const char *ident, int option, int facility)
{
	REAL(openlog, void, (const char *, int, int));
	if (ident)
		snprintf(shim_ident, sizeof(shim_ident), "%s", ident);
	real_openlog(ident, option, facility);
}

/* Format one "<LEVEL>IDENT: message\n" line and emit it with a single write()
 * so lines from concurrent processes do not interleave. errno is restored
 * first so that %m expands to the caller's error. */
static void mirror(int pri, const char *fmt, va_list ap, int saved_errno)
{
	char line[4096];
	const char *ident = shim_ident[0] ? shim_ident : program_invocation_short_name;
	int n, m;

	n = snprintf(line, sizeof(line), "<%d>%s: ", pri & LOG_PRIMASK, ident);
	if (n < 0 || (size_t)n >= sizeof(line) - 1)
		return;
	errno = saved_errno;
	m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	if (m < 0)
		m = 0;
	n += m;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2; /* truncated: keep room for '\n' */
	while (n > 0 && line[n - 1] == '\n')
		n--;
	line[n++] = '\n';
	(void)!write(2, line, (size_t)n);
	errno = saved_errno;
}

void vsyslog(int pri, const char *fmt, va_list ap)
{
	REAL(vsyslog, void, (int, const char *, va_list));
	int saved = errno;
	va_list cp;

	va_copy(cp, ap);
	mirror(pri, fmt, cp, saved);
	va_end(cp);
	if (forward_to_syslog())
		real_vsyslog(pri, fmt, ap);
}

void syslog(int pri, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsyslog(pri, fmt, ap);
	va_end(ap);
}

void __vsyslog_chk(int pri, int flag, const char *fmt, va_list ap)
{
	REAL(__vsyslog_chk, void, (int, int, const char *, va_list));
	int saved = errno;
	va_list cp;

	va_copy(cp, ap);
	mirror(pri, fmt, cp, saved);
	va_end(cp);
	if (forward_to_syslog())
		real___vsyslog_chk(pri, flag, fmt, ap);
}

void __syslog_chk(int pri, int flag, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	__vsyslog_chk(pri, flag, fmt, ap);
	va_end(ap);
}
