// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* Uprobes on the Go runtime's map functions.
 *
 * One program serves every map function: the attach cookie says which
 * operation it is and where the key lives (see struct cookie_bits in
 * src/agent/probes.rs). The probe sits on the instruction after the
 * stack-bound check, so it fires exactly once per call and costs an
 * emulated `push %rbp` instead of a single-step. Exact counts are kept in
 * kernel maps before any sampling or ring-buffer loss. */
#include "regs.h"
#include <bpf/bpf_helpers.h>

#define MAX_KEY 256	/* hard cap on key bytes copied; max_key_bytes <= this */
#define GENERIC_KEY_MAX 64
#define MAX_STACK 64

enum op { OP_DELETE = 0, OP_ASSIGN = 1, OP_CLEAR = 2, OP_FATAL = 3, N_OPS = 3 };
enum key_kind { KEY_NONE = 0, KEY_FAST32 = 1, KEY_FAST64 = 2, KEY_FAST64PTR = 3, KEY_FASTSTR = 4, KEY_GENERIC = 5 };
enum map_impl { MAP_CLASSIC = 0, MAP_SWISS = 1 };

/* abi.Kind of a string key reached through the generic path. */
#define GO_KIND_STRING 24
#define GO_KIND_MASK 0x1f
#define MAPTYPE_KEY_OFF 48
#define TYPE_KIND_OFF 23

/* Counter slots in `counters`. */
enum {
	C_OPS = 0,		/* + op: exact per-op counts */
	C_EMITTED = N_OPS,	/* events handed to the ring buffer */
	C_DROPPED,		/* ring buffer full */
	C_SAMPLED_OUT,		/* skipped by --sample */
	C_READ_FAULTS,		/* a user read failed (key, header, goid) */
	N_COUNTERS,
};

struct target_cfg {
	u32 goid_off;		/* 0: unknown */
	u8 map_impl;
	u8 _pad[3];
};

#define EV_GOID_KNOWN 1
#define EV_WRITING 2
#define EV_KEY_FAULT 4

struct event {
	u64 ts;
	u32 pid;
	u32 tid;
	u64 goid;
	u64 map;
	u64 maptype;
	u64 map_len;
	u64 caller;		/* return address: [rsp] at the probe */
	u64 key_hash;		/* FNV-1a over the captured key bytes and the full length */
	u32 key_len;		/* full length of the key */
	u32 key_captured;	/* bytes in key[] */
	u32 stack_bytes;
	u8 op;
	u8 key_kind;
	u8 go_kind;		/* abi.Kind of a generic key, 0 otherwise */
	u8 flags;
	u8 key[MAX_KEY];
	u64 stack[MAX_STACK];
};

const volatile u32 max_key_bytes = 64;
const volatile u32 sample_every = 1;
const volatile bool want_stack = false;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, u32);
	__type(value, struct target_cfg);
} targets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, N_COUNTERS);
	__type(key, u32);
	__type(value, u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} sample_ticks SEC(".maps");

/* Events are built here, then copied out with their real size: a
 * fixed-size reservation would ship the whole stack array every time. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct event);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} events SEC(".maps");

static __always_inline void bump(u32 slot)
{
	u64 *c = bpf_map_lookup_elem(&counters, &slot);
	if (c)
		*c += 1;
}

/* A wakeup per event (the default when the reader keeps up) costs more than
 * the event itself. Wake the reader only once a batch is waiting; it also
 * polls on a short timer, which bounds the latency of a trickle. */
#define WAKEUP_BATCH_BYTES (256 << 10)

static __always_inline u64 wakeup_flags(void)
{
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= WAKEUP_BATCH_BYTES ? BPF_RB_FORCE_WAKEUP
										   : BPF_RB_NO_WAKEUP;
}

static __always_inline u64 fnv1a(const u8 *buf, u32 n, u32 full_len)
{
	u64 h = 0xcbf29ce484222325ULL;

	for (u32 i = 0; i < MAX_KEY; i++) {
		if (i >= n)
			break;
		h ^= buf[i];
		h *= 0x100000001b3ULL;
	}
	h ^= full_len;
	h *= 0x100000001b3ULL;
	return h;
}

static __always_inline u32 clamp_key(u64 len, u32 cap)
{
	u32 n = len < cap ? (u32)len : cap;
	u32 lim = max_key_bytes;

	if (n > lim)
		n = lim;
	if (n > MAX_KEY)
		n = MAX_KEY;
	return n;
}

static __always_inline void read_string_key(struct event *ev, u64 ptr, u64 len)
{
	u32 n = clamp_key(len, MAX_KEY);

	ev->key_len = len > 0xffffffffULL ? 0xffffffff : (u32)len;
	if (n && bpf_probe_read_user(ev->key, n, (void *)ptr)) {
		ev->flags |= EV_KEY_FAULT;
		n = 0;
	}
	ev->key_captured = n;
}

static __always_inline void read_key(struct event *ev, struct pt_regs *ctx, u8 key_kind)
{
	u64 k = GO_ARG3(ctx);

	switch (key_kind) {
	case KEY_FAST32:
		*(u32 *)ev->key = (u32)k;
		ev->key_len = ev->key_captured = 4;
		break;
	case KEY_FAST64:
	case KEY_FAST64PTR:
		*(u64 *)ev->key = k;
		ev->key_len = ev->key_captured = 8;
		break;
	case KEY_FASTSTR:
		read_string_key(ev, k, GO_ARG4(ctx));
		break;
	case KEY_GENERIC: {
		/* The key's size and kind live in the map type: t->Key->{Size_,Kind_}. */
		u64 ktype = 0, size = 0;
		u8 kind = 0;

		if (bpf_probe_read_user(&ktype, sizeof(ktype), (void *)(GO_ARG1(ctx) + MAPTYPE_KEY_OFF)) ||
		    bpf_probe_read_user(&size, sizeof(size), (void *)ktype) ||
		    bpf_probe_read_user(&kind, sizeof(kind), (void *)(ktype + TYPE_KIND_OFF))) {
			ev->flags |= EV_KEY_FAULT;
			break;
		}
		kind &= GO_KIND_MASK;
		ev->go_kind = kind;
		if (kind == GO_KIND_STRING) {
			u64 hdr[2];

			if (bpf_probe_read_user(hdr, sizeof(hdr), (void *)k)) {
				ev->flags |= EV_KEY_FAULT;
				break;
			}
			read_string_key(ev, hdr[0], hdr[1]);
			break;
		}
		ev->key_len = size > 0xffffffffULL ? 0xffffffff : (u32)size;
		{
			u32 n = clamp_key(size, GENERIC_KEY_MAX);

			if (n && bpf_probe_read_user(ev->key, n, (void *)k)) {
				ev->flags |= EV_KEY_FAULT;
				n = 0;
			}
			ev->key_captured = n;
		}
		break;
	}
	default:
		break;
	}
}

/* runtime.fatal(s string), cookie op OP_FATAL: the message of a crash such as "concurrent map writes". */
static __always_inline int on_fatal(struct pt_regs *ctx, struct target_cfg *cfg, u64 pid_tgid)
{
	u32 tgid = pid_tgid >> 32;
	u32 zero = 0;
	struct event *ev;

	ev = bpf_map_lookup_elem(&scratch, &zero);
	if (!ev)
		return 0;
	__builtin_memset(ev, 0, __builtin_offsetof(struct event, key));
	ev->pid = tgid;
	ev->tid = (u32)pid_tgid;
	ev->op = OP_FATAL;
	if (cfg->goid_off &&
	    bpf_probe_read_user(&ev->goid, sizeof(ev->goid), (void *)(GO_G(ctx) + cfg->goid_off)) == 0)
		ev->flags |= EV_GOID_KNOWN;
	bpf_probe_read_user(&ev->caller, sizeof(ev->caller), (void *)GO_SP(ctx));
	read_string_key(ev, GO_ARG1(ctx), GO_ARG2(ctx));
	ev->ts = bpf_ktime_get_boot_ns();
	if (bpf_ringbuf_output(&events, ev, __builtin_offsetof(struct event, stack), BPF_RB_FORCE_WAKEUP))
		bump(C_DROPPED);
	return 0;
}

static __always_inline int on_map_op(struct pt_regs *ctx)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u32 tgid = pid_tgid >> 32;
	struct target_cfg *cfg = bpf_map_lookup_elem(&targets, &tgid);
	u64 cookie = bpf_get_attach_cookie(ctx);
	u8 op = cookie & 0xff, key_kind = (cookie >> 8) & 0xff;
	u32 zero = 0;
	struct event *ev;
	u64 hdr[5];
	u32 size;

	if (!cfg)
		return 0;
	if (op == OP_FATAL)
		return on_fatal(ctx, cfg, pid_tgid);
	if (op >= N_OPS)
		return 0;
	bump(C_OPS + op);

	if (sample_every > 1) {
		u64 *tick = bpf_map_lookup_elem(&sample_ticks, &zero);

		/* Per-CPU ticks: no lock on the hot path, and a 1-in-N sample
		 * does not care which CPU's phase it follows. */
		if (!tick)
			return 0;
		if (++*tick % sample_every) {
			bump(C_SAMPLED_OUT);
			return 0;
		}
	}

	ev = bpf_map_lookup_elem(&scratch, &zero);
	if (!ev)
		return 0;
	ev->pid = tgid;
	ev->tid = (u32)pid_tgid;
	ev->op = op;
	ev->key_kind = key_kind;
	ev->go_kind = 0;
	ev->flags = 0;
	ev->key_len = 0;
	ev->key_captured = 0;
	ev->stack_bytes = 0;
	ev->map = GO_ARG2(ctx);
	ev->maptype = GO_ARG1(ctx);
	ev->map_len = 0;
	ev->goid = 0;
	ev->caller = 0;

	/* count @0 in both layouts; the write flag is hmap.flags&4 @8 or maps.Map.writing @34. */
	if (ev->map) {
		if (bpf_probe_read_user(hdr, sizeof(hdr), (void *)ev->map) == 0) {
			ev->map_len = hdr[0];
			if (cfg->map_impl == MAP_SWISS) {
				if (((u8 *)hdr)[34] & 1)
					ev->flags |= EV_WRITING;
			} else if (((u8 *)hdr)[8] & 4) {
				ev->flags |= EV_WRITING;
			}
		} else {
			bump(C_READ_FAULTS);
		}
	}
	if (cfg->goid_off) {
		if (bpf_probe_read_user(&ev->goid, sizeof(ev->goid), (void *)(GO_G(ctx) + cfg->goid_off)) == 0)
			ev->flags |= EV_GOID_KNOWN;
		else
			bump(C_READ_FAULTS);
	}
	bpf_probe_read_user(&ev->caller, sizeof(ev->caller), (void *)GO_SP(ctx));

	read_key(ev, ctx, key_kind);
	if (ev->flags & EV_KEY_FAULT)
		bump(C_READ_FAULTS);
	ev->key_hash = key_kind == KEY_NONE ? 0 : fnv1a(ev->key, ev->key_captured, ev->key_len);

	/* Ship only the captured key bytes unless a stack follows the key. */
	/* The mask (not a compare) is what keeps the size provable to the verifier. */
	size = __builtin_offsetof(struct event, key) + ((ev->key_captured + 7) & (2 * MAX_KEY - 8));
	if (want_stack) {
		long n = bpf_get_stack(ctx, ev->stack, sizeof(ev->stack), BPF_F_USER_STACK);

		if (n > 0) {
			ev->stack_bytes = n;
			size = sizeof(*ev);
		}
	}
	ev->ts = bpf_ktime_get_boot_ns();
	if (bpf_ringbuf_output(&events, ev, size, wakeup_flags()))
		bump(C_DROPPED);
	else
		bump(C_EMITTED);
	return 0;
}

/* One attach per process for every function (kernel >= 6.6): one link to
 * create and, above all, one RCU grace period to tear down instead of one
 * per probe. */
SEC("uprobe.multi")
int map_op_multi(struct pt_regs *ctx)
{
	return on_map_op(ctx);
}

/* The same, one link per probe, for kernels without uprobe_multi. */
SEC("uprobe")
int map_op(struct pt_regs *ctx)
{
	return on_map_op(ctx);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
