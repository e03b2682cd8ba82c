// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* Uprobes on the Go runtime's map functions.
 *
 * One program serves every map function: the attach cookie says which
 * operation it is, where the key lives and which target slot describes the
 * process (see fn cookie in src/agent/probes.rs). The probe sits on the instruction after the
 * stack-bound check, so it fires exactly once per call and costs an
 * emulated `push %rbp` instead of a single-step. Exact counts are kept in
 * kernel maps before any sampling or ring-buffer loss. */
#include "regs.h"
#include <bpf/bpf_helpers.h>

/* What the agent shares with this program is an enum or a struct here,
 * never a #define: BTF carries enums, so the skeleton hands them to the
 * agent as types (see `abi` below) and nothing is copied by hand. */

/* Table shapes and caps the agent sizes its side by. */
enum limits {
	MAX_KEY = 256,		/* hard cap on key bytes copied; max_key_bytes <= this */
	/* One per traced process, in the slot its cookies name: an array lookup
	 * where a hash lookup by pid cost a tenth of the whole probe. */
	MAX_TARGETS = 4096,
	WRAP_WORDS = 1 << 18,	/* words of `wrapbits`, see below */
	HOT_WAYS = 8,		/* ways per set of the hot-key table */
	ROW_WAYS = 8,		/* ways per set of the row table */
	ROW_SETS = 2048,	/* the row table's most sets */
	/* log2 of the bytes of text one bit of `wrapbits` describes; the agent
	 * checks at compile time that gobin builds the bits with the same. */
	WRAP_GRANULE_SHIFT = 5,
};

#define GENERIC_KEY_MAX 64
#define MAX_STACK 64

/* The attach cookie: which probe in the low byte, the key kind in the next,
 * the process's target slot from COOKIE_SLOT_SHIFT up. */
enum cookie { COOKIE_KIND_SHIFT = 8, COOKIE_SLOT_SHIFT = 16 };
/* Which probe this is. Map ops first, so they index counters. One byte in
 * records (a fixed underlying type, a clang extension, keeps it so). */
enum op : u8 { OP_DELETE = 0, OP_ASSIGN = 1, OP_CLEAR = 2, N_OPS = 3, PROBE_FATAL = 3, PROBE_RET = 4 };
/* What a ring-buffer record is. */
enum rec : u8 { REC_EVENT = 0, REC_FATAL = 1, REC_CONCURRENT = 2 };
enum key_kind : u8 { KEY_NONE = 0, KEY_FAST32 = 1, KEY_FAST64 = 2, KEY_FAST64PTR = 3, KEY_FASTSTR = 4, KEY_GENERIC = 5 };
enum map_impl : u8 { MAP_CLASSIC = 0, MAP_SWISS = 1 };

/* abi.Kind of a string key reached through the generic path. */
#define GO_KIND_STRING 24
#define GO_KIND_MASK 0x1f
#define MAPTYPE_KEY_OFF 48
#define TYPE_KIND_OFF 23

/* Counter slots in `counters`. */
enum counter {
	C_OPS = 0,		/* + op: exact per-op counts */
	C_EMITTED = N_OPS,	/* events handed to the ring buffer */
	C_DROPPED,		/* ring buffer full */
	C_SAMPLED_OUT,		/* skipped by --sample */
	C_FAULT_HEADER,		/* the map header could not be read */
	C_RATE_LIMITED,		/* skipped by --max-events-per-sec */
	C_HOTKEY_EVICTED,	/* operations of keys kept out of the hot-key table, and keys pushed out */
	C_AGG_FULL,		/* ops whose (pid, type, caller, op) row found no room */
	C_CONCURRENT,		/* writes that began while another goroutine was writing */
	C_FAULT_KEY,		/* the key (or its type) could not be read */
	C_FAULT_GOID,		/* the goroutine id could not be read */
	C_FAULT_FRAME,		/* a frame could not be read while looking for the caller */
	N_COUNTERS,
};

/* What the probe knows of a traced process, in its slot of `targets`. */
struct target_cfg {
	u32 tgid;		/* 0 until every probe of the process is live */
	u32 goid_off;		/* 0: unknown */
	enum map_impl map_impl;
	/* --max-overhead: 1 while the agent keeps the window shut. The links
	 * come and go around windows; the gate makes a window's edges exact,
	 * however long an attach or a detach takes. */
	u8 gated;
	u8 _pad[2];
	u32 wrap_words;		/* the process's words in wrapbits; 0: no caller walk */
	u64 wrap_lo;		/* runtime address of the first granule they describe */
	u32 wrap_first;		/* index of the first of them */
	/* --max-overhead: the hits the open window's credit pays for. The hit
	 * that finds none left shuts the gate itself and wakes the agent to
	 * switch the probes off: a burst that starts mid-window spends what
	 * the window had, not what the next read of the agent finds. */
	__s32 window_hits;
};

/* Sent when a window's hits are spent: shorter than an event's header, so
 * the agent's reader wakes for it and keeps nothing of it. */
struct spent {
	u32 slot;
	u32 _pad;
};

/* Which code only passes a map operation on (the runtime, reflect's map
 * wrappers, the maps package, generic forwarders): one bit per 32-byte
 * granule of text, which Go's amd64 linker aligns every function to, so a
 * granule belongs to one function. Shared by the processes of one binary. */
/* Frames climbed past wrappers before the probe gives up and keeps the
 * immediate caller; a reflect or iterator chain is 2 to 4 deep. */
#define MAX_UNWIND 8

/* Bits of event.flags. */
enum ev_flag { EV_GOID_KNOWN = 1, EV_WRITING = 2, EV_KEY_FAULT = 4, EV_OTHER_KNOWN = 8 };

/* Never read: it names in BTF the enums that no map or record holds, so the
 * skeleton generates them for the agent like the rest. */
const volatile struct abi {
	enum limits limits;
	enum cookie cookie;
	enum ev_flag ev_flag;
	/* `counters` is keyed by u32 (the kernel refuses an enum as the BTF
	 * key of an array map, and libbpf then retries without BTF, loudly). */
	enum counter counter;
} abi = {};

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
	enum op op;
	enum key_kind key_kind;
	u8 go_kind;		/* abi.Kind of a generic key, 0 otherwise */
	u8 flags;		/* enum ev_flag bits */
	enum rec rec;
	u8 _pad[7];
	u64 other_goid;		/* REC_CONCURRENT: the goroutine already writing */
	u64 other_caller;
	u64 via;		/* the immediate caller when `caller` was found above wrappers; 0 otherwise */
	u8 key[MAX_KEY];
	u64 stack[MAX_STACK];
};

const volatile u32 max_key_bytes = 64;
const volatile u32 sample_every = 1;
const volatile bool want_stack = false;
/* trace emits every event; watch keeps aggregates and emits only alarms. */
const volatile bool emit_events = true;
const volatile bool aggregate = false;
const volatile bool hot_keys = false;
const volatile bool track_writes = true;
/* --max-overhead: count hits per slot and honour target_cfg.gated. */
const volatile bool budgeted = false;
/* --max-events-per-sec as a GCRA: one event per `event_interval_ns`, with a
 * burst of `burst_ns` worth of credit. 0: no limit. */
const volatile u64 event_interval_ns = 0;
const volatile u64 burst_ns = 0;

#define HOT_KEY_BYTES 64
/* hotsets holds hot_set_mask + 1 sets (a power of two), hotmeta one entry per way. */
const volatile u32 hot_set_mask = 0;
#define LAT_BUCKETS 40
/* An in-flight write older than this is a leftover (its RET never ran, e.g.
 * the goroutine panicked inside the runtime), not a writer. */
#define STALE_WRITER_NS (5ULL * 1000 * 1000 * 1000)

/* Per (pid, op, map type, caller) rows live in a set-associative table like
 * the hot-key table's, but nothing is ever evicted: rows are exact for the
 * whole run. An array probe is a multiply and a cache line where a hash
 * lookup is a helper call, jhash and a bucket walk (a tenth of watch's
 * program); a row whose set is full goes to the `agg` hash instead. */
/* rowsets holds row_set_mask + 1 sets (a power of two, at most ROW_SETS). */
const volatile u32 row_set_mask = ROW_SETS - 1;

struct row_set {
	u64 tag[ROW_WAYS];	/* 0: empty; else the row's digest, see row_tag() */
};

struct row_cell {
	u64 count;
	u64 map_len;		/* the map's length at the row's latest operation */
};

struct row_count {
	struct row_cell way[ROW_WAYS];
};

/* Written once when a row takes its way, `tag` last. */
struct row_meta {
	u64 tag;
	u64 maptype;
	u64 caller;
	u64 via;
	u32 pid;
	u32 op;
};

struct agg_key {
	u32 pid;
	u32 op;
	u64 maptype;
	u64 caller;
};

struct agg_val {
	u64 count;
	u64 map_len;
	u64 via;
};

/* The hot-key table is set-associative: a key's digest picks a set, and the
 * set's tags say which way holds it. A hit reads one cache line of tags and
 * adds to one counter; a miss reads the tag line and nothing else, unless the
 * key is new and finds an empty way, which it claims with one
 * compare-and-swap. Tags, counts and descriptions are three arrays so that
 * the line every operation reads (tags) is as dense as it can be. */
struct hot_set {
	u64 tag[HOT_WAYS];	/* 0: empty; else the key's digest, see hot_tag() */
};

/* One byte per way, the low byte of its tag (0: empty), eight ways to a
 * word: an eighth the size of the tags, so it stays in cache where the tags
 * would not, and a one-off key (the most common kind under a storm) learns
 * that it is not in a full set without touching the tags at all. The tags
 * stay the truth: a byte only says which ways are worth comparing. */
static __always_inline u64 fp_of(u64 tag)
{
	u64 b = tag & 0xff;

	return b ? b : 1;
}

struct hot_count {
	u64 deletes[HOT_WAYS];
	u64 assigns[HOT_WAYS];
};

/* A full set lets a key in only once it has more operations than the way it
 * would push out, so a storm of one-off keys writes nothing but this per-CPU
 * doorkeeper: the latest untracked keys, two to a bucket, with their
 * operations so far, which go with them into the table. A bucket gives up
 * the entry with fewer operations (the older on a tie), so a key on its way
 * in outlasts a storm of one-off keys. */
#define HOT_DOOR_BUCKETS 2048
struct hot_door {
	u64 tag;
	u32 deletes;
	u32 assigns;
};

struct hot_door_bucket {
	struct hot_door e[2];
};

/* What a way holds, written once when a key takes it. `tag` goes in last: a
 * reader trusts the entry only while it equals the set's tag. */
struct hot_meta {
	u64 tag;
	u64 map;
	u64 maptype;
	u64 hash;
	u32 pid;
	u32 key_len;
	u8 key_captured;
	enum key_kind key_kind;
	u8 go_kind;
	u8 _pad[5];
	u8 key[HOT_KEY_BYTES];
};

/* One goroutine's write in progress, from entry to RET. */
struct g_write {
	u64 ts;
	u64 map;
	u64 maptype;
	u32 pid;
	u32 op;
};

struct writer_key {
	u32 pid;
	u32 _pad;
	u64 map;
};

struct writer_val {
	u64 count;	/* writes in flight on this map */
	u64 goid;	/* the latest of them */
	u64 caller;
	u64 ts;
};

struct lat_key {
	u32 pid;
	u32 _pad;
	u64 maptype;
};

struct lat_val {
	u64 count;
	u64 sum_ns;
	u64 buckets[LAT_BUCKETS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_TARGETS);
	__type(key, u32);
	__type(value, struct target_cfg);
} targets SEC(".maps");

/* Written by the agent through its mapping, once per binary. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, WRAP_WORDS);
	__type(key, u32);
	__type(value, u64);
} wrapbits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, N_COUNTERS);
	__type(key, u32);
	__type(value, u64);
} counters SEC(".maps");

/* --max-overhead: per target slot, every hit (what the probes cost the
 * process) and the operations a live window saw. Sized to one entry
 * otherwise. */
struct slot_count {
	u64 hits;
	u64 ops[N_OPS];
	/* The program's own time on this process's hits, timed in the program:
	 * the kernel's run-time statistics are one sum for every process, need
	 * CAP_SYS_ADMIN, and count a run preempted mid-way at the length of the
	 * preemption. Runs over PREEMPTED_NS are left out of both. */
	u64 prog_ns;
	u64 prog_runs;
};

/* No run of the program takes this long unless it was preempted. */
#define PREEMPTED_NS 20000

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_TARGETS);
	__type(key, u32);
	__type(value, struct slot_count);
} slot_counts SEC(".maps");

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

/* The agent maps these three and reads them in place each interval. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, ROW_SETS);
	__type(key, u32);
	__type(value, struct row_set);
} rowsets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, ROW_SETS);
	__type(key, u32);
	__type(value, struct row_count);
} rowcounts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, ROW_SETS * ROW_WAYS);
	__type(key, u32);
	__type(value, struct row_meta);
} rowmeta SEC(".maps");

/* Rows whose set in the table is full. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct agg_key);
	__type(value, struct agg_val);
} agg SEC(".maps");

/* Both sized by --hot-keys-size before load, and mapped by the agent, which
 * reads them in place each interval instead of copying 9 MB out. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 65536 / HOT_WAYS);
	__type(key, u32);
	__type(value, struct hot_set);
} hotsets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 65536 / HOT_WAYS);
	__type(key, u32);
	__type(value, struct hot_count);
} hotcounts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536 / HOT_WAYS);
	__type(key, u32);
	__type(value, u64);
} hotfps SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HOT_DOOR_BUCKETS);
	__type(key, u32);
	__type(value, struct hot_door_bucket);
} hotdoor SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 65536);
	__type(key, u32);
	__type(value, struct hot_meta);
} hotmeta SEC(".maps");

/* Keyed by the g pointer (R14): a goroutine keeps it across threads. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, u64);
	__type(value, struct g_write);
} inflight SEC(".maps");

/* Never deleted (an entry freed under a CPU that still holds it could be
 * reused for another map and miscount it): an idle map's entry just rests at
 * count 0 until the LRU gives it to another. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct writer_key);
	__type(value, struct writer_val);
} writers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct lat_key);
	__type(value, struct lat_val);
} latency SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} rate_tat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} events SEC(".maps");

static __always_inline void bump(enum counter which)
{
	u32 slot = which;
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

/* murmur3's finalizer: every input bit reaches every output bit. */
static __always_inline u64 mix64(u64 x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

/* The key's hash: eight bytes a step (a byte loop cost as much as a map
 * lookup), over the captured bytes and the full length. `buf` is 8-aligned
 * and MAX_KEY long; bytes past `n` are masked off, whatever they hold. */
static __always_inline u64 key_hash(const u8 *buf, u32 n, u32 full_len)
{
	u64 h = 0x9e3779b97f4a7c15ULL ^ full_len;

	for (u32 i = 0; i < MAX_KEY / 8; i++) {
		u32 left;
		u64 w;

		if (i * 8 >= n)
			break;
		left = n - i * 8;
		w = *(const u64 *)(buf + i * 8);
		if (left < 8)
			w &= (1ULL << (left * 8)) - 1;
		h = (h ^ w) * 0xff51afd7ed558ccdULL;
		h ^= h >> 29;
	}
	return mix64(h);
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

static __always_inline void read_key(struct event *ev, struct pt_regs *ctx, enum key_kind key_kind)
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

/* Common header of every record; the key and stack follow per kind. */
static __always_inline void fill_header(struct event *ev, u64 pid_tgid, enum rec rec, enum op op)
{
	__builtin_memset(ev, 0, __builtin_offsetof(struct event, key));
	ev->pid = pid_tgid >> 32;
	ev->tid = (u32)pid_tgid;
	ev->rec = rec;
	ev->op = op;
}

static __always_inline void read_goid(struct event *ev, struct pt_regs *ctx, struct target_cfg *cfg)
{
	if (!cfg->goid_off)
		return;
	if (bpf_probe_read_user(&ev->goid, sizeof(ev->goid), (void *)(GO_G(ctx) + cfg->goid_off)) == 0)
		ev->flags |= EV_GOID_KNOWN;
	else
		bump(C_FAULT_GOID);
}

/* Alarms (fatal, concurrent write) are never sampled or rate limited. */
static __always_inline void output_alarm(struct event *ev)
{
	ev->ts = bpf_ktime_get_boot_ns();
	if (bpf_ringbuf_output(&events, ev, __builtin_offsetof(struct event, stack), BPF_RB_FORCE_WAKEUP))
		bump(C_DROPPED);
}

/* runtime.fatal(s string): the message of a crash such as "concurrent map writes". */
static __always_inline int on_fatal(struct pt_regs *ctx, struct target_cfg *cfg, u64 pid_tgid)
{
	u32 zero = 0;
	struct event *ev = bpf_map_lookup_elem(&scratch, &zero);

	if (!ev)
		return 0;
	fill_header(ev, pid_tgid, REC_FATAL, 0);
	read_goid(ev, ctx, cfg);
	bpf_probe_read_user(&ev->caller, sizeof(ev->caller), (void *)GO_SP(ctx));
	read_string_key(ev, GO_ARG1(ctx), GO_ARG2(ctx));
	/* The message is a constant whose page the process may never have
	 * touched, and a uprobe cannot fault it in: with its address, the agent
	 * reads it from the binary instead. */
	ev->map = GO_ARG1(ctx);
	output_alarm(ev);
	return 0;
}

static __always_inline u32 log2_bucket(u64 v)
{
	u32 r = 0;

	/* Branch-free enough for the verifier; clz has no BPF instruction. */
	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8) { v >>= 8; r += 8; }
	if (v >> 4) { v >>= 4; r += 4; }
	if (v >> 2) { v >>= 2; r += 2; }
	if (v >> 1) { r += 1; }
	/* bucket r holds [2^r, 2^(r+1)); 0 lands in bucket 0 with 1. */
	return r < LAT_BUCKETS ? r : LAT_BUCKETS - 1;
}

static __always_inline void writer_done(u32 pid, u64 map)
{
	struct writer_key wk = { .pid = pid, .map = map };
	struct writer_val *w = bpf_map_lookup_elem(&writers, &wk);

	if (w)
		__sync_fetch_and_add(&w->count, -1);
}

/* A write begins: count it in flight until its RET and say whether another
 * goroutine was mid-write on the same map (naming it in ev->other_*). The
 * count is taken with one atomic add whose old value is the answer, so of
 * two writes that begin at the same instant on two CPUs, the second sees
 * the first: a look first and a count after would let each miss the other. */
static __always_inline bool writer_begin(struct pt_regs *ctx, struct event *ev, u8 op)
{
	u64 g = GO_G(ctx);
	struct g_write *prev = bpf_map_lookup_elem(&inflight, &g);
	struct writer_key wk = { .pid = ev->pid, .map = ev->map };
	struct writer_val *w;
	struct g_write gw = {};
	u64 now = bpf_ktime_get_boot_ns(), before, other_goid, other_caller, other_ts;
	bool concurrent = false;

	/* This goroutine's last write never reached RET (a panic inside the
	 * runtime): undo it so it is not taken for a writer forever. */
	if (prev) {
		writer_done(prev->pid, prev->map);
		bpf_map_delete_elem(&inflight, &g);
	}
	w = bpf_map_lookup_elem(&writers, &wk);
	if (!w) {
		struct writer_val nw = {};

		/* Losing this insert to another CPU is fine: its entry is used. */
		bpf_map_update_elem(&writers, &wk, &nw, BPF_NOEXIST);
		w = bpf_map_lookup_elem(&writers, &wk);
	}
	if (w) {
		other_goid = w->goid;
		other_caller = w->caller;
		other_ts = w->ts;
		before = __sync_fetch_and_add(&w->count, 1);
		/* This goroutine's own leftover was undone above, so a count
		 * already there is another goroutine's write (unless it is a
		 * leftover too old to be one). */
		if (before > 0 && (other_ts == 0 || now - other_ts < STALE_WRITER_NS)) {
			concurrent = true;
			/* Named only when it is surely the other: a writer that began
			 * at the same instant may not have filled the entry in yet. */
			if (other_ts && (!(ev->flags & EV_GOID_KNOWN) || other_goid != ev->goid)) {
				ev->other_goid = other_goid;
				ev->other_caller = other_caller;
				ev->flags |= EV_OTHER_KNOWN;
			}
		}
		w->goid = ev->goid;
		w->caller = ev->caller;
		w->ts = now;
	}
	/* The runtime's own flag: a writer that began before we attached. */
	if (!concurrent && (ev->flags & EV_WRITING))
		concurrent = true;
	gw.ts = now;
	gw.map = ev->map;
	gw.maptype = ev->maptype;
	gw.pid = ev->pid;
	gw.op = op;
	bpf_map_update_elem(&inflight, &g, &gw, BPF_ANY);
	return concurrent;
}

/* Any RET of a probed map function: the write that began at entry is over. */
static __always_inline int on_ret(struct pt_regs *ctx)
{
	u64 g = GO_G(ctx);
	struct g_write *gw = bpf_map_lookup_elem(&inflight, &g);

	if (!gw)
		return 0;
	if (gw->op == OP_DELETE) {
		struct lat_key lk = { .pid = gw->pid, .maptype = gw->maptype };
		struct lat_val *lv = bpf_map_lookup_elem(&latency, &lk);
		u64 dt = bpf_ktime_get_boot_ns() - gw->ts;

		if (!lv) {
			struct lat_val zero_val = {};

			bpf_map_update_elem(&latency, &lk, &zero_val, BPF_NOEXIST);
			lv = bpf_map_lookup_elem(&latency, &lk);
		}
		if (lv) {
			u32 b = log2_bucket(dt);

			__sync_fetch_and_add(&lv->count, 1);
			__sync_fetch_and_add(&lv->sum_ns, dt);
			if (b < LAT_BUCKETS)
				__sync_fetch_and_add(&lv->buckets[b], 1);
		}
	}
	writer_done(gw->pid, gw->map);
	bpf_map_delete_elem(&inflight, &g);
	return 0;
}

static __always_inline void aggregate_overflow(struct event *ev)
{
	struct agg_key ak = { .pid = ev->pid, .op = ev->op, .maptype = ev->maptype, .caller = ev->caller };
	struct agg_val *av = bpf_map_lookup_elem(&agg, &ak);

	if (!av) {
		struct agg_val nv = {};

		if (bpf_map_update_elem(&agg, &ak, &nv, BPF_NOEXIST) == -7 /* E2BIG */) {
			bump(C_AGG_FULL);
			return;
		}
		av = bpf_map_lookup_elem(&agg, &ak);
		if (!av)
			return;
	}
	__sync_fetch_and_add(&av->count, 1);
	av->map_len = ev->map_len;
	av->via = ev->via;
}

/* Which (pid, op, map type, caller) this is; never 0, the empty tag. */
static __always_inline u64 row_tag(struct event *ev)
{
	u64 t = mix64(ev->caller ^ (ev->maptype * 0x9e3779b97f4a7c15ULL) ^ ((u64)ev->pid << 8) ^ ev->op);

	return t ? t : 1;
}

static __always_inline void row_meta_fill(u32 idx, struct event *ev, u64 tag)
{
	struct row_meta *m = bpf_map_lookup_elem(&rowmeta, &idx);

	if (!m)
		return;
	m->maptype = ev->maptype;
	m->caller = ev->caller;
	m->via = ev->via;
	m->pid = ev->pid;
	m->op = ev->op;
	m->tag = tag;
}

static __always_inline void aggregate_op(struct event *ev)
{
	u64 tag = row_tag(ev);
	u32 set = (u32)(tag >> 32) & row_set_mask, way = ROW_WAYS;
	struct row_set *rs = bpf_map_lookup_elem(&rowsets, &set);
	struct row_count *rc = bpf_map_lookup_elem(&rowcounts, &set);

	if (!rs || !rc)
		return;
	/* Ways fill in order and are never given back. */
#pragma unroll
	for (u32 i = 0; i < ROW_WAYS; i++) {
		u64 t = rs->tag[i];

		if (t == 0) {
			t = __sync_val_compare_and_swap(&rs->tag[i], 0, tag);
			if (t == 0)
				row_meta_fill(set * ROW_WAYS + i, ev, tag);
		}
		if (t == 0 || t == tag) {
			way = i;
			break;
		}
	}
	if (way >= ROW_WAYS) {
		aggregate_overflow(ev);
		return;
	}
	__sync_fetch_and_add(&rc->way[way].count, 1);
	rc->way[way].map_len = ev->map_len;
}

/* Which (process, map, map type, key) this is; never 0, the empty tag. The
 * type too: the GC hands a freed map's address to the next map of any type. */
static __always_inline u64 hot_tag(struct event *ev)
{
	/* key_hash is already well mixed: one more mix for the rest will do. */
	u64 t = ev->key_hash ^
		mix64(ev->map ^ (ev->maptype * 0x9e3779b97f4a7c15ULL) ^ ((u64)ev->pid << 48));

	return t ? t : 1;
}

static __always_inline void hot_meta_fill(u32 set, u32 way, struct event *ev, u64 tag)
{
	u32 idx = set * HOT_WAYS + way;
	struct hot_meta *m = bpf_map_lookup_elem(&hotmeta, &idx);
	u32 n = ev->key_captured;

	if (!m)
		return;
	m->map = ev->map;
	m->maptype = ev->maptype;
	m->hash = ev->key_hash;
	m->pid = ev->pid;
	m->key_len = ev->key_len;
	m->key_captured = n < HOT_KEY_BYTES ? n : HOT_KEY_BYTES;
	m->key_kind = ev->key_kind;
	m->go_kind = ev->go_kind;
	__builtin_memcpy(m->key, ev->key, HOT_KEY_BYTES);
	m->tag = tag;
}

#define BYTES_01 0x0101010101010101ULL
#define BYTES_80 0x8080808080808080ULL

/* Whether any byte of v is 0 (exact as a yes/no; which byte, it may not say). */
static __always_inline bool has_zero_byte(u64 v)
{
	return ((v - BYTES_01) & ~v & BYTES_80) != 0;
}

/* Claims empty way `way` of `set` for a new key. Returns the way, or
 * HOT_WAYS when another CPU took it for another key first; sets *fresh
 * when this CPU took it, and so still owes the way its description. */
static __always_inline u32 hot_claim(struct hot_set *hs, u32 way, u64 tag, bool *fresh)
{
	u64 t;

	way &= HOT_WAYS - 1;
	t = __sync_val_compare_and_swap(&hs->tag[way], 0, tag);
	if (t == 0)
		*fresh = true;
	else if (t != tag)
		return HOT_WAYS;
	return way;
}

/* A key not in its full set. It waits in the doorkeeper, its operations
 * counted there, until it has more than the way with the fewest; then it
 * takes that way with all its counts. Returns the way it took (its counts
 * already include this operation), or HOT_WAYS. */
static __always_inline u32 hot_admit(struct hot_set *hs, struct hot_count *c, u64 *fps, u32 set,
				     struct event *ev, u64 tag)
{
	u32 d = (u32)(tag >> 8) & (HOT_DOOR_BUCKETS - 1), victim = 0;
	struct hot_door_bucket *b = bpf_map_lookup_elem(&hotdoor, &d);
	u64 least = ~0ULL, victim_tag = 0, mine;
	struct hot_door *door;

	/* Until it beats the least-used way, none of this key's operations are
	 * in the table: the counter says the table is not the whole truth. It
	 * also counts the way given up when the key gets in. */
	bump(C_HOTKEY_EVICTED);
	if (!b)
		return HOT_WAYS;
	if (b->e[0].tag == tag) {
		door = &b->e[0];
	} else if (b->e[1].tag == tag) {
		door = &b->e[1];
	} else {
		/* The newcomer takes e[0]. The entry given up is the one with
		 * fewer operations, and on a tie the older (e[1]), so a key that
		 * has just arrived outlasts the next newcomer too. */
		door = &b->e[0];
		if ((u64)door->deletes + door->assigns >= (u64)b->e[1].deletes + b->e[1].assigns)
			b->e[1] = *door;
		door->tag = tag;
		door->deletes = door->assigns = 0;
	}
	if (ev->op == OP_DELETE)
		door->deletes++;
	else
		door->assigns++;
	mine = (u64)door->deletes + door->assigns;
	/* Seen once: every way has at least that, no need to read them. */
	if (mine < 2)
		return HOT_WAYS;

#pragma unroll
	for (u32 i = 0; i < HOT_WAYS; i++) {
		u64 n = c->deletes[i] + c->assigns[i];

		if (n < least) {
			least = n;
			victim = i;
			victim_tag = hs->tag[i];
		}
	}
	if (mine <= least)
		return HOT_WAYS;
	victim &= HOT_WAYS - 1;
	/* Lost to another CPU: its operations so far stay in the doorkeeper. */
	if (__sync_val_compare_and_swap(&hs->tag[victim], victim_tag, tag) != victim_tag)
		return HOT_WAYS;
	c->deletes[victim] = door->deletes;
	c->assigns[victim] = door->assigns;
	door->tag = 0;
	door->deletes = door->assigns = 0;
	hot_meta_fill(set, victim, ev, tag);
	((u8 *)fps)[victim] = fp_of(tag);
	return HOT_WAYS + 1;
}

static __always_inline void count_hot_key(struct event *ev)
{
	u64 tag = hot_tag(ev);
	u32 set = (u32)(tag >> 32) & hot_set_mask;
	struct hot_set *hs = bpf_map_lookup_elem(&hotsets, &set);
	struct hot_count *c = bpf_map_lookup_elem(&hotcounts, &set);
	u64 *fps = bpf_map_lookup_elem(&hotfps, &set), w;
	u32 way = HOT_WAYS, empty = HOT_WAYS;
	bool fresh = false;

	if (!hs || !c || !fps)
		return;
	w = *fps;
	if (!has_zero_byte(w) && !has_zero_byte(w ^ (fp_of(tag) * BYTES_01))) {
		/* A full set, and no way's byte matches: not here. */
		hot_admit(hs, c, fps, set, ev, tag);
		return;
	}
	/* A hit reads one cache line of tags and adds to one counter. */
#pragma unroll
	for (u32 i = 0; i < HOT_WAYS; i++) {
		u64 t = hs->tag[i];

		if (t == tag) {
			way = i;
			break;
		}
		if (t == 0 && empty == HOT_WAYS)
			empty = i;
	}
	if (way == HOT_WAYS) {
		if (empty < HOT_WAYS) {
			way = hot_claim(hs, empty, tag, &fresh);
			if (way == HOT_WAYS)
				bump(C_HOTKEY_EVICTED);
		} else {
			way = hot_admit(hs, c, fps, set, ev, tag);
		}
	}
	if (way >= HOT_WAYS)
		return;
	if (ev->op == OP_DELETE)
		__sync_fetch_and_add(&c->deletes[way], 1);
	else
		__sync_fetch_and_add(&c->assigns[way], 1);
	/* The description goes in after the count: its two lines of hotmeta
	 * (8 MB) are cold, and a locked add after their stores would wait for
	 * both to arrive, where now the probe's return overlaps them. A reader
	 * that sees the tag before the description skips the way until then. */
	if (fresh) {
		hot_meta_fill(set, way, ev, tag);
		((u8 *)fps)[way & (HOT_WAYS - 1)] = fp_of(tag);
	}
}

/* GCRA: admit when the theoretical arrival time is within the burst. Not
 * atomic: under contention a few extra events may pass, and every one is
 * still counted as emitted, limited or dropped. */
static __always_inline bool rate_limited(void)
{
	u32 zero = 0;
	u64 *tat, now, t;

	if (!event_interval_ns)
		return false;
	tat = bpf_map_lookup_elem(&rate_tat, &zero);
	if (!tat)
		return false;
	now = bpf_ktime_get_boot_ns();
	t = *tat > now ? *tat : now;
	if (t - now > burst_ns)
		return true;
	*tat = t + event_interval_ns;
	return false;
}

/* Whether return address `ret` lies in a wrapper (ret - 1: a call that
 * ends its function returns to the next one). */
static __always_inline bool in_wrapper(struct target_cfg *cfg, u64 ret)
{
	u64 g = (ret - 1 - cfg->wrap_lo) >> WRAP_GRANULE_SHIFT;
	u32 w;
	u64 *bits;

	if (g >= (u64)cfg->wrap_words * 64)
		return false;
	w = cfg->wrap_first + (u32)(g >> 6);
	bits = bpf_map_lookup_elem(&wrapbits, &w);
	return bits && ((*bits >> (g & 63)) & 1);
}

/* The caller is the first frame outside the wrappers, found by frame
 * pointers: the probe sits before the callee's `push rbp`, so rbp is still
 * the immediate caller's frame, [rbp] the next one's and [rbp+8] the return
 * address into it. A direct call (the common case) costs one bit test. */
static __always_inline void skip_wrappers(struct pt_regs *ctx, struct target_cfg *cfg, struct event *ev)
{
	u64 fp = GO_FP(ctx), frame[2];

	if (!in_wrapper(cfg, ev->caller))
		return;
#pragma unroll
	for (int i = 0; i < MAX_UNWIND; i++) {
		if (!fp)
			return;
		if (bpf_probe_read_user(frame, sizeof(frame), (void *)fp)) {
			bump(C_FAULT_FRAME);
			return;
		}
		if (!frame[1])
			return;
		if (!in_wrapper(cfg, frame[1])) {
			ev->via = ev->caller;
			ev->caller = frame[1];
			return;
		}
		fp = frame[0];
	}
}

static __always_inline int on_map_op(struct pt_regs *ctx)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u64 cookie = bpf_get_attach_cookie(ctx);
	u8 op = cookie & 0xff, key_kind = (cookie >> COOKIE_KIND_SHIFT) & 0xff;
	u32 slot = (cookie >> COOKIE_SLOT_SHIFT) & (MAX_TARGETS - 1), zero = 0;
	struct target_cfg *cfg = bpf_map_lookup_elem(&targets, &slot);
	struct event *ev;
	u64 hdr[5];
	u32 size;

	if (!cfg || cfg->tgid != pid_tgid >> 32)
		return 0;
	if (budgeted) {
		struct slot_count *sc = bpf_map_lookup_elem(&slot_counts, &slot);
		bool live = !cfg->gated;

		/* Every hit spends credit, a write's return too: counting only
		 * the map operations let a window run past its credit by their
		 * returns' hits. */
		if (live && __sync_fetch_and_add(&cfg->window_hits, -1) <= 0) {
			struct spent sp = { .slot = slot };

			cfg->gated = 1;
			live = false;
			bpf_ringbuf_output(&events, &sp, sizeof(sp), BPF_RB_FORCE_WAKEUP);
		}
		if (sc) {
			sc->hits++;
			if (live && op < N_OPS)
				sc->ops[op]++;
		}
		/* A write's return still clears its in-flight mark, and a
		 * fatal error is never missed (its probe stays attached). */
		if (!live && op < N_OPS)
			return 0;
	}
	if (op == PROBE_FATAL)
		return on_fatal(ctx, cfg, pid_tgid);
	if (op == PROBE_RET)
		return track_writes ? on_ret(ctx) : 0;
	if (op >= N_OPS)
		return 0;
	bump(C_OPS + op);

	ev = bpf_map_lookup_elem(&scratch, &zero);
	if (!ev)
		return 0;
	fill_header(ev, pid_tgid, REC_EVENT, op);
	ev->key_kind = key_kind;
	ev->map = GO_ARG2(ctx);
	ev->maptype = GO_ARG1(ctx);

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
			bump(C_FAULT_HEADER);
		}
	}
	/* The goroutine is in every event and names each writer; aggregates
	 * need it only for an alarm, and a user read costs as much as a map
	 * lookup. */
	if (emit_events || track_writes)
		read_goid(ev, ctx, cfg);
	if (bpf_probe_read_user(&ev->caller, sizeof(ev->caller), (void *)GO_SP(ctx)))
		bump(C_FAULT_FRAME);
	else if (cfg->wrap_words)
		skip_wrappers(ctx, cfg, ev);

	/* Writes to a nil map panic before they write: nothing is in flight. */
	if (ev->map && (track_writes ? writer_begin(ctx, ev, op) : (ev->flags & EV_WRITING))) {
		/* Sent now, before the runtime can kill the process; ev is
		 * the same buffer and goes on to become the event. */
		if (!(emit_events || track_writes))
			read_goid(ev, ctx, cfg);
		bump(C_CONCURRENT);
		ev->rec = REC_CONCURRENT;
		output_alarm(ev);
		ev->rec = REC_EVENT;
	}
	if (aggregate)
		aggregate_op(ev);
	if (!hot_keys && !emit_events)
		return 0;

	read_key(ev, ctx, key_kind);
	if (ev->flags & EV_KEY_FAULT) {
		bump(C_FAULT_KEY);
		/* An unread key has no identity to count under. */
		if (hot_keys)
			bump(C_HOTKEY_EVICTED);
	} else if (key_kind != KEY_NONE) {
		ev->key_hash = key_hash(ev->key, ev->key_captured, ev->key_len);
		if (hot_keys)
			count_hot_key(ev);
	}
	if (!emit_events)
		return 0;

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
	if (rate_limited()) {
		bump(C_RATE_LIMITED);
		return 0;
	}

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

/* --max-overhead: the program's own time, per process (see slot_count). */
static __always_inline int timed_map_op(struct pt_regs *ctx)
{
	struct slot_count *sc;
	u64 t0, dt;
	u32 slot;

	/* Exact mode pays nothing here: the verifier drops what follows. */
	if (!budgeted)
		return on_map_op(ctx);
	slot = (bpf_get_attach_cookie(ctx) >> COOKIE_SLOT_SHIFT) & (MAX_TARGETS - 1);
	t0 = bpf_ktime_get_ns();
	on_map_op(ctx);
	dt = bpf_ktime_get_ns() - t0;
	sc = bpf_map_lookup_elem(&slot_counts, &slot);
	if (sc && dt < PREEMPTED_NS) {
		sc->prog_ns += dt;
		sc->prog_runs++;
	}
	return 0;
}

/* One attach per process for every function (kernel >= 6.6): one link to
 * create and, above all, one RCU grace period to tear down instead of one
 * per probe. */
SEC("uprobe.multi")
int map_op_multi(struct pt_regs *ctx)
{
	return timed_map_op(ctx);
}

/* The same, one link per probe, for kernels without uprobe_multi. */
SEC("uprobe")
int map_op(struct pt_regs *ctx)
{
	return timed_map_op(ctx);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
