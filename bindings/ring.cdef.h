/* SPDX-License-Identifier: GPL-2.0-only */
/* VMBus ring buffers as uio_hv_generic maps them (ring.c; docs/protocol.md,
 * "File copy over uio_hv_generic").
 *
 * A ring is given as (base, ring_size, hdr_size): base points at the ring's
 * header (struct hv_ring_header, vmbus.cdef.h), hdr_size is the header page
 * size (the kernel's PAGE_SIZE; only its first HV_HYP_PAGE_SIZE bytes are
 * shared with the host) and the circular data area is
 * base[hdr_size .. ring_size).  The same functions serve both ends: the guest
 * receives on RX and sends on TX, a simulated host does the opposite.
 *
 * Results are >= 0 or -errno: -EAGAIN empty (recv) or full (send), -EMSGSIZE
 * packet larger than the buffer or the ring, -EBADMSG corrupt indices or
 * packet descriptor, -EINVAL impossible geometry.  *signal is set to 1 when
 * the other end must be notified (and to 0 otherwise). */

/* What the kernel does when the channel opens: zero the shared header, put
 * both indices at start (a multiple of 8 inside the data area; tests use it to
 * start next to the wrap point) and set feat_pending_send_sz. */
int hvr_reset(uint8_t *base, uint32_t ring_size, uint32_t hdr_size, uint32_t start);

/* Bytes the consumer may read now (acquire load of write_index), or -errno. */
int hvr_readable(uint8_t *base, uint32_t ring_size, uint32_t hdr_size);

/* Consumer: copy the next packet (descriptor + payload + padding, without the
 * trailer) to buf and consume it; return its length.  The packet is copied
 * before it is validated further, the descriptor is taken from that private
 * copy, and read_index is published with release order afterwards. */
int hvr_recv(uint8_t *base, uint32_t ring_size, uint32_t hdr_size,
	     uint8_t *buf, uint32_t buflen, int *signal);

/* Consumer: receive up to max_pkts packets into buf, back to back (each at an
 * 8-byte aligned offset), their lengths in lens[]; return how many (0 if the
 * ring is empty).  A first packet that is corrupt or larger than buf gives
 * that error (nothing consumed); a later one ends the batch and stays in the
 * ring for the next call. */
int hvr_recv_batch(uint8_t *base, uint32_t ring_size, uint32_t hdr_size,
		   uint8_t *buf, uint32_t buflen, uint32_t *lens, int max_pkts, int *signal);

/* Consumer: drop everything readable (after -EBADMSG); return the byte count. */
int hvr_discard(uint8_t *base, uint32_t ring_size, uint32_t hdr_size, int *signal);

/* Consumer: store interrupt_mask (0 = signal me, 1 = don't), full barrier,
 * then return the readable byte count so the caller re-checks for packets
 * the producer wrote while the mask was set. */
int hvr_set_mask(uint8_t *base, uint32_t ring_size, uint32_t hdr_size, uint32_t mask);

/* Consumer: spin up to spin_ns nanoseconds for data; return the readable byte
 * count (0 if none arrived). */
int hvr_poll(uint8_t *base, uint32_t ring_size, uint32_t hdr_size, uint64_t spin_ns);

/* Producer: append one packet (descriptor, payload, zero padding, trailer)
 * and publish it.  If it does not fit, pending_send_sz is set to the bytes
 * needed and -EAGAIN returned: the consumer signals once that much is free.
 * *signal tells whether the consumer must be notified (mask clear and the
 * ring was empty before this packet). */
int hvr_send(uint8_t *base, uint32_t ring_size, uint32_t hdr_size,
	     uint16_t type, uint16_t flags, uint64_t trans_id,
	     const uint8_t *payload, uint32_t len, int *signal);

/* The file-copy fast path (ring.c): serve consecutive WRITE_TO_FILE requests
 * at the head of RX without returning to Python.  For each in-band IC FCOPY
 * WRITE whose size is valid: pwrite() its data to file_fd, consume it, and
 * send the response (the same payload with status 0 and icflags
 * TRANSACTION|RESPONSE, trans_id echoed) on TX, signalling the host through
 * uio_fd (irqcontrol 1) when the ring rules require it.  When RX runs empty
 * it sets the RX interrupt mask and spins up to spin_ns for the next packet.
 *
 * It stops, leaving the packet in RX for the caller, at anything else: another
 * message, a pwrite() that fails or is short, too little room in TX.  Returns
 * the number of WRITEs served, or -errno (ring corrupt, irqcontrol failed).
 * *state: HVR_FAST_IDLE when it stopped because RX stayed empty for spin_ns
 * (the mask is still set), HVR_FAST_OTHER at a packet for the caller,
 * HVR_FAST_LIMIT after max_pkts. */
#define HVR_FAST_IDLE 1
#define HVR_FAST_OTHER 2
#define HVR_FAST_LIMIT 3
int hvr_fcopy_writes(uint8_t *rx, uint8_t *tx, uint32_t ring_size, uint32_t hdr_size,
		     int uio_fd, int file_fd, uint8_t *scratch, uint32_t scratch_len,
		     uint64_t spin_ns, uint32_t max_pkts, int *state);
