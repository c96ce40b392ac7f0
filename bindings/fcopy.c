/* SPDX-License-Identifier: GPL-2.0-only */
/* The legacy file-copy daemon's WRITE fast path; see fcopy.cdef.h.
 *
 * A copy is thousands of 6 KiB WRITEs answered one at a time, so the
 * daemon's cost per message is the copy's speed.  This loop does per WRITE
 * exactly what tools/hv/hv_fcopy_daemon.c does (read, pwrite, write the
 * status) plus one poll() that lets a signal stop it; everything else stays
 * in Python. */
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <endian.h>
#include <linux/hyperv.h>
#include <sys/types.h>

#include "fcopy.cdef.h"

#define W_DATA offsetof(struct hv_do_fcopy, data)

/* A WRITE we may serve here: its data, or NULL. */
static const uint8_t *fast_write(const uint8_t *msg, size_t len, uint64_t *offset, uint32_t *size)
{
	uint32_t op;

	if (len < W_DATA)
		return NULL;
	memcpy(&op, msg + offsetof(struct hv_fcopy_hdr, operation), sizeof(op));
	if (le32toh(op) != WRITE_TO_FILE)
		return NULL;
	memcpy(offset, msg + offsetof(struct hv_do_fcopy, offset), sizeof(*offset));
	memcpy(size, msg + offsetof(struct hv_do_fcopy, size), sizeof(*size));
	*offset = le64toh(*offset);
	*size = le32toh(*size);
	if (*size > DATA_FRAGMENT || W_DATA + *size > len || *offset > (uint64_t)INT64_MAX - *size)
		return NULL;
	return msg + W_DATA;
}

static int write_all(int fd, const uint8_t *data, uint32_t size, uint64_t offset)
{
	uint32_t done = 0;

	while (done < size) {
		ssize_t n = pwrite(fd, data + done, size - done, (off_t)(offset + done));

		if (n <= 0)
			return -1;
		done += (uint32_t)n;
	}
	return 0;
}

ssize_t hvd_fcopy_pump(int dev_fd, int file_fd, int wake_fd, uint8_t *buf, size_t cap)
{
	static const int32_t ok = HV_S_OK;
	struct pollfd fds[2] = {
		{ .fd = dev_fd, .events = POLLIN },
		{ .fd = wake_fd, .events = POLLIN },
	};

	for (;;) {
		const uint8_t *data;
		uint64_t offset;
		uint32_t size;
		ssize_t len;

		if (poll(fds, 2, -1) < 0)
			return errno == EINTR ? 0 : -errno;
		if (fds[1].revents)
			return 0;
		len = read(dev_fd, buf, cap);
		if (len < 0)
			return errno == EINTR ? 0 : -errno;
		if (len == 0)
			return -ECONNRESET;
		data = fast_write(buf, (size_t)len, &offset, &size);
		if (!data || write_all(file_fd, data, size, offset) < 0)
			return len;
		len = write(dev_fd, &ok, sizeof(ok));
		if (len < 0)
			return -errno;
		if (len != sizeof(ok))
			return -EIO;
	}
}
