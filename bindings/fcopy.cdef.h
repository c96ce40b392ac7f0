/* SPDX-License-Identifier: GPL-2.0-only */
/* The legacy file-copy daemon's WRITE fast path (fcopy.c).
 *
 * hvd_fcopy_pump() serves /dev/vmbus/hv_fcopy (dev_fd) while the host streams
 * WRITE_TO_FILE messages into the open file file_fd: it waits (poll) for the
 * device or for wake_fd (the daemon's signal wake-up pipe), reads one message
 * into buf, and if it is a valid WRITE whose data is written in full it
 * replies status 0 and goes on.  It returns
 *   n > 0   a message of n bytes in buf that it did not answer (any other op,
 *           an invalid WRITE, or a WRITE whose pwrite failed: the caller
 *           handles it the slow way and reports the error);
 *   0       wake_fd became readable, or a read was interrupted: nothing pending;
 *   -errno  the device failed (-ECONNRESET: end of file on a socket).
 * Validation matches hvdaemons.protocol.fcopy.decode_write_payload(). */
ssize_t hvd_fcopy_pump(int dev_fd, int file_fd, int wake_fd, uint8_t *buf, size_t cap);
