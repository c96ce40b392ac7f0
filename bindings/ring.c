/* SPDX-License-Identifier: GPL-2.0-only */
/* VMBus ring buffer access for the uio file-copy channel; see ring.cdef.h.
 *
 * Plays the role of tools/hv/vmbus_bufring.c, written for any architecture:
 * ordering comes from the compiler's __atomic builtins (acquire loads,
 * release stores, sequentially consistent fences), which give the
 * barriers arm64 needs and compile to plain moves plus mfence on x86-64.
 * Every index and descriptor the other side controls is checked before use,
 * and a packet is copied out whole before its descriptor is trusted. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/hyperv.h>

#include "ring.cdef.h"
#include "vmbus.h"

static inline uint32_t *field(uint8_t *base, uint32_t off)
{
	return (uint32_t *)(void *)(base + off);
}

static inline uint32_t load_acquire(uint8_t *base, uint32_t off)
{
	return __atomic_load_n(field(base, off), __ATOMIC_ACQUIRE);
}

static inline uint32_t load_relaxed(uint8_t *base, uint32_t off)
{
	return __atomic_load_n(field(base, off), __ATOMIC_RELAXED);
}

static inline void store_release(uint8_t *base, uint32_t off, uint32_t v)
{
	__atomic_store_n(field(base, off), v, __ATOMIC_RELEASE);
}

static inline void store_relaxed(uint8_t *base, uint32_t off, uint32_t v)
{
	__atomic_store_n(field(base, off), v, __ATOMIC_RELAXED);
}

static inline void full_fence(void)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* The spin-wait hint of the kernel's cpu_relax() (arch/x86/include/asm/vdso/processor.h:
 * rep_nop, i.e. pause; arch/arm64/include/asm/vdso/processor.h: yield), a compiler
 * barrier elsewhere. */
static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#else
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
#endif
}

/* Data area size, or 0 if the geometry is impossible. */
static inline uint32_t data_size(uint32_t ring_size, uint32_t hdr_size)
{
	if (hdr_size < HV_HYP_PAGE_SIZE || ring_size <= hdr_size)
		return 0;
	if ((ring_size - hdr_size) % 8)
		return 0;
	return ring_size - hdr_size;
}

static inline int index_ok(uint32_t idx, uint32_t dsize)
{
	return idx < dsize && (idx % 8) == 0;
}

static inline uint32_t used_bytes(uint32_t w, uint32_t r, uint32_t dsize)
{
	return w >= r ? w - r : dsize - r + w;
}

/* Copy n bytes out of the circular data area starting at off. */
static void copy_out(const uint8_t *data, uint32_t dsize, uint32_t off, uint8_t *dst, uint32_t n)
{
	uint32_t first = dsize - off;

	if (n <= first) {
		memcpy(dst, data + off, n);
	} else {
		memcpy(dst, data + off, first);
		memcpy(dst + first, data, n - first);
	}
}

/* Copy n bytes into the circular data area at off; returns the next offset. */
static uint32_t copy_in(uint8_t *data, uint32_t dsize, uint32_t off, const uint8_t *src, uint32_t n)
{
	uint32_t first = dsize - off;

	if (n <= first) {
		memcpy(data + off, src, n);
	} else {
		memcpy(data + off, src, first);
		memcpy(data, src + first, n - first);
	}
	off += n;
	return off >= dsize ? off - dsize : off;
}

static uint32_t fill_zero(uint8_t *data, uint32_t dsize, uint32_t off, uint32_t n)
{
	static const uint8_t zeros[8];

	return copy_in(data, dsize, off, zeros, n);
}

int hvr_reset(uint8_t *base, uint32_t ring_size, uint32_t hdr_size, uint32_t start)
{
	uint32_t dsize = data_size(ring_size, hdr_size);

	if (!dsize || !index_ok(start, dsize))
		return -EINVAL;
	/* Only the part the host shares: the rest of the page is the guest's. */
	memset(base, 0, HV_HYP_PAGE_SIZE);
	store_relaxed(base, HVR_WRITE_INDEX, start);
	store_relaxed(base, HVR_READ_INDEX, start);
	store_relaxed(base, HVR_FEATURE_BITS, 1);
	full_fence();
	return 0;
}

int hvr_readable(uint8_t *base, uint32_t ring_size, uint32_t hdr_size)
{
	uint32_t dsize = data_size(ring_size, hdr_size);
	uint32_t w, r;

	if (!dsize)
		return -EINVAL;
	w = load_acquire(base, HVR_WRITE_INDEX);
	r = load_relaxed(base, HVR_READ_INDEX);
	if (!index_ok(w, dsize) || !index_ok(r, dsize))
		return -EBADMSG;
	return (int)used_bytes(w, r, dsize);
}

/* Consumer side, after read_index moved from `before` to `after`: does the
 * producer wait for space (pending_send_sz) that just became free?  Same rule
 * as the kernel's hv_pkt_iter_close(): signal only on the crossing. */
static int pending_crossed(uint8_t *base, uint32_t dsize, uint32_t freed)
{
	uint32_t pending, w, r, writable;

	/* Order the read_index store before the pending_send_sz load (the
	 * producer does the mirror image: store pending, fence, load read_index). */
	full_fence();
	if (!(load_relaxed(base, HVR_FEATURE_BITS) & 1))
		return 0;
	pending = load_relaxed(base, HVR_PENDING_SEND_SZ);
	if (!pending)
		return 0;
	w = load_acquire(base, HVR_WRITE_INDEX);
	r = load_relaxed(base, HVR_READ_INDEX);
	if (!index_ok(w, dsize))
		return 0;
	writable = dsize - used_bytes(w, r, dsize);
	if (writable <= pending)
		return 0;
	/* Already enough room before this read: the producer was told then. */
	if (writable - freed > pending)
		return 0;
	return 1;
}

/* Take one packet at read index r (w already acquired) into dst. */
static int take_packet(uint8_t *data, uint32_t dsize, uint32_t r, uint32_t avail,
		       uint8_t *dst, uint32_t dstlen, uint32_t *consumed)
{
	struct vmpacket_descriptor desc;
	uint32_t len;

	if (avail < HVR_DESC_SIZE + HVR_TRAILER_SIZE)
		return -EBADMSG;
	/* Validate a private copy: the host may rewrite ring bytes any time. */
	copy_out(data, dsize, r, (uint8_t *)&desc, HVR_DESC_SIZE);
	len = (uint32_t)desc.len8 * 8;
	if ((uint32_t)desc.offset8 * 8 < HVR_DESC_SIZE || len < (uint32_t)desc.offset8 * 8 ||
	    len + HVR_TRAILER_SIZE > avail)
		return -EBADMSG;
	if (len > dstlen)
		return -EMSGSIZE;
	memcpy(dst, &desc, HVR_DESC_SIZE);
	r += HVR_DESC_SIZE;
	if (r >= dsize)
		r -= dsize;
	copy_out(data, dsize, r, dst + HVR_DESC_SIZE, len - HVR_DESC_SIZE);
	*consumed = len + HVR_TRAILER_SIZE;
	return (int)len;
}

int hvr_recv(uint8_t *base, uint32_t ring_size, uint32_t hdr_size,
	     uint8_t *buf, uint32_t buflen, int *signal)
{
	uint32_t dsize = data_size(ring_size, hdr_size);
	uint32_t w, r, consumed = 0;
	int len;

	*signal = 0;
	if (!dsize)
		return -EINVAL;
	w = load_acquire(base, HVR_WRITE_INDEX);
	r = load_relaxed(base, HVR_READ_INDEX);
	if (!index_ok(w, dsize) || !index_ok(r, dsize))
		return -EBADMSG;
	if (w == r)
		return -EAGAIN;
	len = take_packet(base + hdr_size, dsize, r, used_bytes(w, r, dsize), buf, buflen,
			  &consumed);
	if (len < 0)
		return len;
	r += consumed;
	if (r >= dsize)
		r -= dsize;
	/* Release: every load of the packet completes before the host may
	 * reuse its space. */
	store_release(base, HVR_READ_INDEX, r);
	*signal = pending_crossed(base, dsize, consumed);
	return len;
}

int hvr_recv_batch(uint8_t *base, uint32_t ring_size, uint32_t hdr_size,
		   uint8_t *buf, uint32_t buflen, uint32_t *lens, int max_pkts, int *signal)
{
	uint32_t dsize = data_size(ring_size, hdr_size);
	uint32_t w, r, start_r, pos = 0, total = 0, consumed;
	int n = 0, len;

	*signal = 0;
	if (!dsize)
		return -EINVAL;
	w = load_acquire(base, HVR_WRITE_INDEX);
	r = start_r = load_relaxed(base, HVR_READ_INDEX);
	if (!index_ok(w, dsize) || !index_ok(r, dsize))
		return -EBADMSG;
	while (n < max_pkts && r != w) {
		len = take_packet(base + hdr_size, dsize, r, used_bytes(w, r, dsize), buf + pos,
				  buflen - pos, &consumed);
		if (len < 0) {
			/* Report a bad first packet; later ones wait for the next call. */
			if (n == 0)
				return len;
			break;
		}
		lens[n++] = (uint32_t)len;
		pos += (uint32_t)len; /* len is a multiple of 8 */
		total += consumed;
		r += consumed;
		if (r >= dsize)
			r -= dsize;
	}
	if (r != start_r) {
		store_release(base, HVR_READ_INDEX, r);
		*signal = pending_crossed(base, dsize, total);
	}
	return n;
}

int hvr_discard(uint8_t *base, uint32_t ring_size, uint32_t hdr_size, int *signal)
{
	uint32_t dsize = data_size(ring_size, hdr_size);
	uint32_t w, r, n;

	*signal = 0;
	if (!dsize)
		return -EINVAL;
	w = load_acquire(base, HVR_WRITE_INDEX);
	r = load_relaxed(base, HVR_READ_INDEX);
	if (!index_ok(w, dsize))
		return -EBADMSG;
	/* A corrupt read_index is ours to repair: resynchronise with the producer. */
	n = index_ok(r, dsize) ? used_bytes(w, r, dsize) : 0;
	store_release(base, HVR_READ_INDEX, w);
	if (n)
		*signal = pending_crossed(base, dsize, n);
	return (int)n;
}

int hvr_set_mask(uint8_t *base, uint32_t ring_size, uint32_t hdr_size, uint32_t mask)
{
	store_relaxed(base, HVR_INTERRUPT_MASK, mask);
	/* The store must be visible before we look at write_index again, or a
	 * packet written meanwhile would be neither signalled nor seen. */
	full_fence();
	return hvr_readable(base, ring_size, hdr_size);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int hvr_poll(uint8_t *base, uint32_t ring_size, uint32_t hdr_size, uint64_t spin_ns)
{
	uint64_t deadline = now_ns() + spin_ns;
	int n, i;

	for (;;) {
		n = hvr_readable(base, ring_size, hdr_size);
		if (n != 0)
			return n;
		for (i = 0; i < 64; i++) {
			if (load_relaxed(base, HVR_WRITE_INDEX) != load_relaxed(base, HVR_READ_INDEX))
				break;
			cpu_relax();
		}
		if (i == 64 && now_ns() >= deadline)
			return 0;
	}
}

int hvr_send(uint8_t *base, uint32_t ring_size, uint32_t hdr_size,
	     uint16_t type, uint16_t flags, uint64_t trans_id,
	     const uint8_t *payload, uint32_t len, int *signal)
{
	uint32_t dsize = data_size(ring_size, hdr_size);
	uint8_t *data = base + hdr_size;
	struct vmpacket_descriptor desc;
	uint64_t trailer;
	uint32_t pktlen, need, w, r, pos;

	*signal = 0;
	if (!dsize)
		return -EINVAL;
	if (len > dsize)
		return -EMSGSIZE;
	pktlen = (HVR_DESC_SIZE + len + 7) & ~7u;
	need = pktlen + HVR_TRAILER_SIZE;
	/* The producer must leave one byte free, so a packet that fills the
	 * whole data area can never be sent; len8 must fit 16 bits. */
	if (need >= dsize || pktlen / 8 > 0xffff)
		return -EMSGSIZE;

	w = load_relaxed(base, HVR_WRITE_INDEX);
	r = load_acquire(base, HVR_READ_INDEX);
	if (!index_ok(w, dsize) || !index_ok(r, dsize))
		return -EBADMSG;
	if (dsize - used_bytes(w, r, dsize) <= need) {
		/* Ask the consumer to signal once enough is free, then look again
		 * in case it freed the space before it could see the request. */
		store_relaxed(base, HVR_PENDING_SEND_SZ, need);
		full_fence();
		r = load_acquire(base, HVR_READ_INDEX);
		if (!index_ok(r, dsize))
			return -EBADMSG;
		if (dsize - used_bytes(w, r, dsize) <= need)
			return -EAGAIN;
	}
	if (load_relaxed(base, HVR_PENDING_SEND_SZ))
		store_relaxed(base, HVR_PENDING_SEND_SZ, 0);

	desc.type = type;
	desc.offset8 = (uint16_t)(HVR_DESC_SIZE / 8);
	desc.len8 = (uint16_t)(pktlen / 8);
	desc.flags = flags;
	desc.trans_id = trans_id;
	pos = copy_in(data, dsize, w, (const uint8_t *)&desc, HVR_DESC_SIZE);
	pos = copy_in(data, dsize, pos, payload, len);
	pos = fill_zero(data, dsize, pos, pktlen - HVR_DESC_SIZE - len);
	trailer = (uint64_t)w << 32;
	pos = copy_in(data, dsize, pos, (const uint8_t *)&trailer, HVR_TRAILER_SIZE);

	/* Release: the packet bytes are visible before the index that
	 * publishes them. */
	store_release(base, HVR_WRITE_INDEX, pos);
	/* The consumer may have set its mask or caught up in the meantime; the
	 * fence orders our index store before those loads (store->load). */
	full_fence();
	if (load_relaxed(base, HVR_INTERRUPT_MASK) == 0 &&
	    load_relaxed(base, HVR_READ_INDEX) == w)
		*signal = 1;
	return 0;
}

/* -- file-copy fast path ------------------------------------------------------ */

/* Offsets in an in-band packet: descriptor, pipe header, IC header, body. */
#define FC_DESC_TYPE offsetof(struct vmpacket_descriptor, type)
#define FC_DESC_OFFSET8 offsetof(struct vmpacket_descriptor, offset8)
#define FC_DESC_TRANS_ID offsetof(struct vmpacket_descriptor, trans_id)
#define FC_IC sizeof(struct vmpacket_descriptor)
#define FC_ICMSG (FC_IC + sizeof(struct vmbuspipe_hdr))
#define FC_IC_MSGTYPE (FC_ICMSG + offsetof(struct icmsg_hdr, icmsgtype))
#define FC_IC_STATUS (FC_ICMSG + offsetof(struct icmsg_hdr, status))
#define FC_IC_FLAGS (FC_ICMSG + offsetof(struct icmsg_hdr, icflags))
#define FC_BODY (FC_ICMSG + sizeof(struct icmsg_hdr))
#define FC_OP (FC_BODY + offsetof(struct hv_fcopy_hdr, operation))
#define FC_OFFSET (FC_BODY + offsetof(struct hv_do_fcopy, offset))
#define FC_SIZE (FC_BODY + offsetof(struct hv_do_fcopy, size))
#define FC_DATA (FC_BODY + offsetof(struct hv_do_fcopy, data))

static int irq_signal(int uio_fd)
{
	int32_t one = 1;
	ssize_t n;

	do {
		n = write(uio_fd, &one, sizeof(one));
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return n == sizeof(one) ? 0 : -EIO;
}

/* Is pkt (len bytes, descriptor included) a WRITE this path may serve? */
static int fast_write_ok(const uint8_t *pkt, uint32_t len, uint64_t *offset, uint32_t *size)
{
	uint16_t type, offset8, msgtype;
	uint32_t op;

	memcpy(&type, pkt + FC_DESC_TYPE, sizeof(type));
	memcpy(&offset8, pkt + FC_DESC_OFFSET8, sizeof(offset8));
	if (type != VM_PKT_DATA_INBAND || offset8 * 8u != FC_IC || len < FC_DATA)
		return 0;
	memcpy(&msgtype, pkt + FC_IC_MSGTYPE, sizeof(msgtype));
	memcpy(&op, pkt + FC_OP, sizeof(op));
	if (msgtype != ICMSGTYPE_FCOPY || op != WRITE_TO_FILE || (pkt[FC_IC_FLAGS] & ICMSGHDRFLAG_RESPONSE))
		return 0;
	memcpy(offset, pkt + FC_OFFSET, sizeof(*offset));
	memcpy(size, pkt + FC_SIZE, sizeof(*size));
	if (*size > (uint32_t)DATA_FRAGMENT || *size > len - FC_DATA || *offset > (uint64_t)INT64_MAX - *size)
		return 0;
	return 1;
}

int hvr_fcopy_writes(uint8_t *rx, uint8_t *tx, uint32_t ring_size, uint32_t hdr_size,
		     int uio_fd, int file_fd, uint8_t *scratch, uint32_t scratch_len,
		     uint64_t spin_ns, uint32_t max_pkts, int *state)
{
	uint32_t dsize = data_size(ring_size, hdr_size);
	const uint32_t ok = HV_S_OK;
	uint32_t served = 0, w, r, consumed, size, tw, tr;
	uint64_t offset, trans_id;
	int len, signal, rc;
	ssize_t n;

	*state = 0;
	if (!dsize)
		return -EINVAL;
	while (served < max_pkts) {
		w = load_acquire(rx, HVR_WRITE_INDEX);
		r = load_relaxed(rx, HVR_READ_INDEX);
		if (!index_ok(w, dsize) || !index_ok(r, dsize))
			return -EBADMSG;
		if (w == r) {
			/* Keep the host from signalling while we look for its next
			 * request; the caller unmasks and re-checks before sleeping. */
			store_relaxed(rx, HVR_INTERRUPT_MASK, 1);
			full_fence();
			if (hvr_poll(rx, ring_size, hdr_size, spin_ns) <= 0) {
				*state = HVR_FAST_IDLE;
				return (int)served;
			}
			continue;
		}
		len = take_packet(rx + hdr_size, dsize, r, used_bytes(w, r, dsize), scratch,
				  scratch_len, &consumed);
		if (len < 0 || !fast_write_ok(scratch, (uint32_t)len, &offset, &size)) {
			*state = HVR_FAST_OTHER;
			return (int)served;
		}
		/* Room for the response (as long as the request) must be there
		 * before anything is done: waiting for it is the caller's job. */
		tw = load_relaxed(tx, HVR_WRITE_INDEX);
		tr = load_acquire(tx, HVR_READ_INDEX);
		if (!index_ok(tw, dsize) || !index_ok(tr, dsize))
			return -EBADMSG;
		if (dsize - used_bytes(tw, tr, dsize) <= (uint32_t)len + HVR_TRAILER_SIZE) {
			*state = HVR_FAST_OTHER;
			return (int)served;
		}
		do {
			n = pwrite(file_fd, scratch + FC_DATA, size, (off_t)offset);
		} while (n < 0 && errno == EINTR);
		if (n != (ssize_t)size) {
			/* Failures are the file writer's business: it redoes this one. */
			*state = HVR_FAST_OTHER;
			return (int)served;
		}
		r += consumed;
		if (r >= dsize)
			r -= dsize;
		store_release(rx, HVR_READ_INDEX, r);
		if (pending_crossed(rx, dsize, consumed)) {
			rc = irq_signal(uio_fd);
			if (rc < 0)
				return rc;
		}
		memcpy(scratch + FC_IC_STATUS, &ok, sizeof(ok));
		scratch[FC_IC_FLAGS] = ICMSGHDRFLAG_TRANSACTION | ICMSGHDRFLAG_RESPONSE;
		memcpy(&trans_id, scratch + FC_DESC_TRANS_ID, sizeof(trans_id));
		rc = hvr_send(tx, ring_size, hdr_size, VM_PKT_DATA_INBAND, 0, trans_id,
			      scratch + FC_IC, (uint32_t)len - FC_IC, &signal);
		if (rc < 0)
			return rc;
		if (signal) {
			rc = irq_signal(uio_fd);
			if (rc < 0)
				return rc;
		}
		served++;
	}
	*state = HVR_FAST_LIMIT;
	return (int)served;
}
