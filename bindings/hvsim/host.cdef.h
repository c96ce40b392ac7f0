/* SPDX-License-Identifier: GPL-2.0-only */
/* The simulated Hyper-V host's C helpers (host.c), compiled only into the
 * simulator's module hvsim._hvsim.  The ring primitives they build on are the
 * daemons' own (bindings/ring.c, compiled into both modules). */

/* The package version this module was compiled from (see hvsim/_ffi.py). */
extern const char hvs_version[];

/* Header field access for the simulator and tests: an acquire load, and a
 * store followed by a full barrier.  offset is the byte offset of a field of
 * struct hv_ring_header (bindings/vmbus.cdef.h). */
uint32_t hvs_load(uint8_t *base, uint32_t offset);
void hvs_store(uint8_t *base, uint32_t offset, uint32_t value);

/* The host's side of a file copy (hvsim.uio), in C so that a benchmark
 * measures the daemon rather than the simulator: stream WRITE requests for
 * the bytes [*offset, end) of file_fd, one outstanding at a time as Hyper-V
 * does.  req (req_len bytes) is a complete WRITE request payload (IC headers
 * + struct hv_do_fcopy) used as the template.  Each request gets the next
 * *trans_id; when the ring rules call for an interrupt the guest is signalled
 * like uio_hv_generic does (RX mask set first if mask_on_irq, then the s32
 * *irq_count + 1 sent on irq_fd).  Responses are awaited by spinning up to
 * spin_ns with the TX mask set.  Returns HVS_HOST_DONE, HVS_HOST_WAIT (a
 * request is outstanding: the caller waits for the guest's signal and
 * collects the response itself), HVS_HOST_STATUS (a response carried a
 * failure, stored in *status) or HVS_HOST_FULL (RX full, nothing sent), or
 * -errno (-EPROTO: a response that is not the answer to the request). */
#define HVS_HOST_DONE 0
#define HVS_HOST_WAIT 1
#define HVS_HOST_STATUS 2
#define HVS_HOST_FULL 3
int hvs_host_fcopy_stream(uint8_t *rx, uint8_t *tx, uint32_t ring_size, uint32_t hdr_size,
			  int file_fd, uint64_t *offset, uint64_t end, uint8_t *req,
			  uint32_t req_len, uint64_t *trans_id, uint8_t *scratch,
			  uint32_t scratch_len, int irq_fd, int32_t *irq_count, int mask_on_irq,
			  uint64_t spin_ns, uint32_t *status);
