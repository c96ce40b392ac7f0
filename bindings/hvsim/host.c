/* SPDX-License-Identifier: GPL-2.0-only */
/* The simulated Hyper-V host's side of the uio file-copy channel; see
 * host.cdef.h.  Simulator code only: it is compiled into hvsim._hvsim, never
 * into the daemons' module.  The rings are driven through bindings/ring.c,
 * the daemons' own primitives, so both ends follow the same rules. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <linux/hyperv.h>

#include "ring.cdef.h"
#include "vmbus.h"
#include "host.cdef.h"

const char hvs_version[] = HVDAEMONS_VERSION;

/* A WRITE request payload as the host sends it. */
struct hvs_fcopy_write {
	struct vmbuspipe_hdr pipe;
	struct icmsg_hdr ic;
	struct hv_do_fcopy fcopy;
} __attribute__((packed));

/* A response packet as read from TX: descriptor, then the IC headers. */
struct hvs_response {
	struct vmpacket_descriptor desc;
	struct vmbuspipe_hdr pipe;
	struct icmsg_hdr ic;
} __attribute__((packed));


uint32_t hvs_load(uint8_t *base, uint32_t offset)
{
	return __atomic_load_n((uint32_t *)(void *)(base + offset), __ATOMIC_ACQUIRE);
}

void hvs_store(uint8_t *base, uint32_t offset, uint32_t value)
{
	__atomic_store_n((uint32_t *)(void *)(base + offset), value, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

static int host_irq(uint8_t *rx, int irq_fd, int32_t *irq_count, int mask_on_irq)
{
	int32_t count;
	ssize_t n;

	if (mask_on_irq)
		hvs_store(rx, HVR_INTERRUPT_MASK, 1);
	count = ++*irq_count;
	n = send(irq_fd, &count, sizeof(count), MSG_DONTWAIT | MSG_NOSIGNAL);
	/* A full socket means an interrupt is already pending: they coalesce. */
	if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
		return -errno;
	return 0;
}

static int host_stream(uint8_t *rx, uint8_t *tx, uint32_t ring_size, uint32_t hdr_size,
		       int file_fd, uint64_t *offset, uint64_t end, uint8_t *req,
		       uint32_t req_len, uint64_t *trans_id, uint8_t *scratch,
		       uint32_t scratch_len, int irq_fd, int32_t *irq_count, int mask_on_irq,
		       uint64_t spin_ns, uint32_t *status)
{
	struct hvs_fcopy_write *w = (struct hvs_fcopy_write *)(void *)req;
	struct hvs_response *resp = (struct hvs_response *)(void *)scratch;
	uint32_t size, resp_status;
	uint64_t got_id;
	ssize_t n;
	int rc, signal, len;

	if (req_len < sizeof(*w) || scratch_len < sizeof(*resp))
		return -EINVAL;
	while (*offset < end) {
		size = end - *offset < DATA_FRAGMENT ? (uint32_t)(end - *offset) : DATA_FRAGMENT;
		do {
			n = pread(file_fd, w->fcopy.data, size, (off_t)*offset);
		} while (n < 0 && errno == EINTR);
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ENODATA; /* the file shrank */
		size = (uint32_t)n;
		memcpy(&w->fcopy.offset, offset, sizeof(w->fcopy.offset));
		memcpy(&w->fcopy.size, &size, sizeof(w->fcopy.size));
		w->ic.ictransaction_id++;
		rc = hvr_send(rx, ring_size, hdr_size, VM_PKT_DATA_INBAND,
			      VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED, *trans_id + 1, req,
			      req_len, &signal);
		if (rc == -EAGAIN)
			return HVS_HOST_FULL;
		if (rc < 0)
			return rc;
		++*trans_id;
		*offset += size;
		if (signal) {
			rc = host_irq(rx, irq_fd, irq_count, mask_on_irq);
			if (rc < 0)
				return rc;
		}
		/* Spin for the response with TX interrupts masked. */
		hvs_store(tx, HVR_INTERRUPT_MASK, 1);
		if (hvr_poll(tx, ring_size, hdr_size, spin_ns) <= 0 &&
		    hvr_set_mask(tx, ring_size, hdr_size, 0) <= 0)
			return HVS_HOST_WAIT;
		len = hvr_recv(tx, ring_size, hdr_size, scratch, scratch_len, &signal);
		if (len < 0)
			return len;
		if (signal) {
			rc = host_irq(rx, irq_fd, irq_count, mask_on_irq);
			if (rc < 0)
				return rc;
		}
		memcpy(&got_id, &resp->desc.trans_id, sizeof(got_id));
		if (got_id != *trans_id || (uint32_t)len < sizeof(*resp) ||
		    !(resp->ic.icflags & ICMSGHDRFLAG_RESPONSE))
			return -EPROTO;
		memcpy(&resp_status, &resp->ic.status, sizeof(resp_status));
		if (resp_status) {
			*status = resp_status;
			return HVS_HOST_STATUS;
		}
	}
	return HVS_HOST_DONE;
}

int hvs_host_fcopy_stream(uint8_t *rx, uint8_t *tx, uint32_t ring_size, uint32_t hdr_size,
			  int file_fd, uint64_t *offset, uint64_t end, uint8_t *req,
			  uint32_t req_len, uint64_t *trans_id, uint8_t *scratch,
			  uint32_t scratch_len, int irq_fd, int32_t *irq_count, int mask_on_irq,
			  uint64_t spin_ns, uint32_t *status)
{
	int rc = host_stream(rx, tx, ring_size, hdr_size, file_fd, offset, end, req, req_len,
			     trans_id, scratch, scratch_len, irq_fd, irq_count, mask_on_irq,
			     spin_ns, status);

	/* Whatever comes next waits for signals again: the guest must send them. */
	if (rc != HVS_HOST_WAIT)
		hvs_store(tx, HVR_INTERRUPT_MASK, 0);
	return rc;
}
