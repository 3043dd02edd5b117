/* rendezvous.c - the ranks meet at rank 0 over TCP; the connections then carry
 * heartbeats and faults for the rest of the job.
 *
 * Every rank r > 0 connects to rank 0 and sends a hello: its rank, the world size and
 * the hash of what it will run.  Rank 0 waits for all of them (each step has a
 * deadline), compares the hashes and answers every rank: either the blob (NCCL's
 * unique id) or a message naming the ranks that differ, which every rank prints
 * before it stops.  The topology is a star: rank 0 holds one socket per rank, every
 * other rank one socket to rank 0.
 *
 * The watchdog thread of each rank then
 *   - sends a heartbeat every second carrying whether this rank is inside a
 *     communication operation (rt_rdzv_op_begin/end) and how many it has begun;
 *   - treats a connection that closes without a goodbye as the death of that rank,
 *     and a peer silent for heartbeat_timeout_s as stopped;
 *   - polls the communication layer for asynchronous errors (hooks.poll_error);
 *   - reports an operation running past op_timeout_s to rank 0, which names the
 *     ranks that are not inside any operation (they hold the others up), or, when
 *     every rank is inside one, says so (mismatched collectives or a stuck transfer).
 * A fault is decided by rank 0 (or is rank 0's own death) and sent to every rank;
 * each one prints one line naming the failed rank, calls hooks.abort (ncclCommAbort)
 * and exits 1.  SIGALRM bounds the abort to a few seconds.
 *
 * Wire format: every frame is five big-endian uint32 (type, rank, a, b, len) and len
 * bytes of text.  Simplifications, on purpose: no reconnection, no authentication
 * (the port is meant for a trusted cluster network), one thread per rank. */
#include "comm.h"
#include "rt.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum {
	MSG_HELLO = 1, /* a: world, b: hash high, text: hash low (4 bytes) */
	MSG_WELCOME,   /* text: the blob */
	MSG_REJECT,    /* text: why */
	MSG_HB,        /* a: operations begun, b: inside an operation (1) or not (0) */
	MSG_FAULT,     /* rank: the failed rank, text: what happened */
	MSG_TIMEOUT,   /* a: operations begun, text: the operation */
	MSG_BYE,       /* this rank is done */
	MSG_BYE_ACK,   /* rank 0: every rank is done */
};

#define MAX_TEXT 4096
#define HDR 20

struct peer {
	int fd;            /* -1 once closed */
	int said_bye;
	double last_seen;
	uint32_t ops;      /* operations begun, from its last heartbeat */
	int in_op;
	unsigned char buf[HDR + MAX_TEXT];
	size_t nbuf;
};

struct rt_rdzv {
	int rank, world;
	double op_timeout, hb_timeout;
	/* rank 0: peers[r] for every rank r > 0; others: peers[0] is rank 0 */
	struct peer *peers;
	pthread_mutex_t lock; /* hooks, sending, bye state */
	pthread_cond_t cond;
	struct rt_rdzv_hooks hooks;
	pthread_t thread;
	int wake[2];
	atomic_int stop;
	/* this rank's current operation */
	atomic_uint ops;
	atomic_int in_op;
	_Atomic double op_start;
	const char *_Atomic op_name;
	int timeout_reported;
	double timeout_reported_at;
	/* closing */
	int closing, byes, bye_acked;
};

uint64_t rt_hash64(const void *data, size_t n, uint64_t h)
{
	const unsigned char *p = data;
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

int rt_rdzv_rank(const struct rt_rdzv *z) { return z->rank; }
int rt_rdzv_world(const struct rt_rdzv *z) { return z->world; }

/* ---- sockets ------------------------------------------------------------------- */

static void put32(unsigned char *p, uint32_t v)
{
	v = htonl(v);
	memcpy(p, &v, 4);
}

static uint32_t get32(const unsigned char *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return ntohl(v);
}

/* Writes all of it or fails; a peer that reads nothing for deadline seconds fails. */
static int send_all(int fd, const void *data, size_t n, double deadline)
{
	const char *p = data;
	while (n) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				double left = deadline - rt_now();
				if (left <= 0)
					return -1;
				struct pollfd pf = { fd, POLLOUT, 0 };
				poll(&pf, 1, (int)(left * 1000) + 1);
				continue;
			}
			return -1;
		}
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

static int send_msg(int fd, uint32_t type, uint32_t rank, uint32_t a, uint32_t b,
		    const void *text, size_t len, double timeout)
{
	unsigned char hdr[HDR];
	if (len > MAX_TEXT)
		len = MAX_TEXT;
	put32(hdr, type);
	put32(hdr + 4, rank);
	put32(hdr + 8, a);
	put32(hdr + 12, b);
	put32(hdr + 16, (uint32_t)len);
	double deadline = rt_now() + timeout;
	if (send_all(fd, hdr, HDR, deadline))
		return -1;
	return len ? send_all(fd, text, len, deadline) : 0;
}

/* Reads exactly n bytes before the deadline: 0, or -1 (errno ETIMEDOUT on timeout,
 * ECONNRESET when the peer closed). */
static int recv_all(int fd, void *data, size_t n, double deadline)
{
	char *p = data;
	while (n) {
		double left = deadline - rt_now();
		if (left <= 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		struct pollfd pf = { fd, POLLIN, 0 };
		int r = poll(&pf, 1, (int)(left * 1000) + 1);
		if (r < 0 && errno != EINTR)
			return -1;
		if (r <= 0)
			continue;
		ssize_t k = recv(fd, p, n, 0);
		if (k == 0) {
			errno = ECONNRESET;
			return -1;
		}
		if (k < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -1;
		}
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

struct frame {
	uint32_t type, rank, a, b, len;
	char text[MAX_TEXT + 1];
};

static int recv_msg(int fd, struct frame *f, double deadline)
{
	unsigned char hdr[HDR];
	if (recv_all(fd, hdr, HDR, deadline))
		return -1;
	f->type = get32(hdr);
	f->rank = get32(hdr + 4);
	f->a = get32(hdr + 8);
	f->b = get32(hdr + 12);
	f->len = get32(hdr + 16);
	if (f->len > MAX_TEXT) {
		errno = EPROTO;
		return -1;
	}
	if (recv_all(fd, f->text, f->len, deadline))
		return -1;
	f->text[f->len] = 0;
	return 0;
}

static void tune_socket(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
	fcntl(fd, F_SETFD, FD_CLOEXEC);
}

static int listen_on(const char *addr, int port, char *err, size_t errlen)
{
	struct addrinfo hints = { 0 }, *res = NULL;
	char ports[16];
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	snprintf(ports, sizeof ports, "%d", port);
	/* listen on every address: MASTER_ADDR names this host for the others */
	int rc = getaddrinfo(NULL, ports, &hints, &res);
	if (rc) {
		snprintf(err, errlen, "cannot listen on port %d: %s", port, gai_strerror(rc));
		return -1;
	}
	int fd = -1, e = 0;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			e = errno;
			continue;
		}
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		if (ai->ai_family == AF_INET6) {
			int zero = 0;
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
		}
		if (!bind(fd, ai->ai_addr, ai->ai_addrlen) && !listen(fd, 1024))
			break;
		e = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		snprintf(err, errlen, "rank 0 cannot listen on port %d (MASTER_ADDR %s): %s", port,
			 addr, strerror(e));
	return fd;
}

/* Connects to addr:port, retrying until the deadline (rank 0 may not listen yet). */
static int connect_to(const char *addr, int port, double deadline, char *err, size_t errlen)
{
	struct addrinfo hints = { 0 }, *res = NULL;
	char ports[16];
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	snprintf(ports, sizeof ports, "%d", port);
	const char *why = "no address";
	char whybuf[256];
	for (;;) {
		int rc = getaddrinfo(addr, ports, &hints, &res);
		if (rc) {
			snprintf(whybuf, sizeof whybuf, "%s", gai_strerror(rc));
			why = whybuf;
		} else {
			for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
				int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
				if (fd < 0)
					continue;
				if (!connect(fd, ai->ai_addr, ai->ai_addrlen)) {
					freeaddrinfo(res);
					tune_socket(fd);
					return fd;
				}
				snprintf(whybuf, sizeof whybuf, "%s", strerror(errno));
				why = whybuf;
				close(fd);
			}
			freeaddrinfo(res);
			res = NULL;
		}
		if (rt_now() >= deadline)
			break;
		usleep(50 * 1000);
	}
	snprintf(err, errlen, "cannot reach rank 0 at %s:%d: %s (is MASTER_ADDR/MASTER_PORT right, "
		 "and is rank 0 running?)", addr, port, why);
	return -1;
}

/* "1,3,5" into buf, at most a few dozen ranks then "...". */
static void rank_list(char *buf, size_t n, const int *ranks, int k)
{
	size_t o = 0;
	buf[0] = 0;
	for (int i = 0; i < k && o + 16 < n; i++) {
		if (i == 32) {
			snprintf(buf + o, n - o, ",... (%d in all)", k);
			return;
		}
		o += (size_t)snprintf(buf + o, n - o, "%s%d", i ? "," : "", ranks[i]);
	}
}

/* ---- the meeting ------------------------------------------------------------------- */

static double env_seconds(const char *name, double dflt)
{
	const char *s = getenv(name);
	if (!s || !*s)
		return dflt;
	char *end;
	double v = strtod(s, &end);
	return (*end || v <= 0) ? dflt : v;
}

/* Rank 0: accept a hello from every other rank, check, answer. */
static int meet_as_root(struct rt_rdzv *z, const struct rt_rdzv_config *cfg, const void *blob,
			size_t blob_len, double timeout, char *err, size_t errlen)
{
	int lfd = cfg->listen_fd;
	if (lfd < 0) {
		lfd = listen_on(cfg->addr, cfg->port, err, errlen);
		if (lfd < 0)
			return -1;
	}
	int world = z->world, got = 0, bad = 0;
	uint64_t *hash = rt_calloc((size_t)world, sizeof *hash);
	char *why = rt_calloc(1, MAX_TEXT);
	hash[0] = cfg->hash;
	double deadline = rt_now() + timeout;
	while (got < world - 1 && !bad) {
		double left = deadline - rt_now();
		if (left <= 0)
			break;
		struct pollfd pf = { lfd, POLLIN, 0 };
		if (poll(&pf, 1, (int)(left * 1000) + 1) <= 0)
			continue;
		int fd = accept(lfd, NULL, NULL);
		if (fd < 0)
			continue;
		tune_socket(fd);
		struct frame *f = rt_malloc(sizeof *f);
		if (recv_msg(fd, f, rt_now() + (left < 10 ? left : 10)) || f->type != MSG_HELLO ||
		    f->len != 4) {
			/* something that is no sluice rank (a port scanner, say): ignore it */
			close(fd);
			free(f);
			continue;
		}
		int r = (int)f->rank;
		uint64_t h = ((uint64_t)f->b << 32) | get32((const unsigned char *)f->text);
		if ((int)f->a != world) {
			snprintf(why, MAX_TEXT, "rank %d was started with WORLD_SIZE %u but rank 0 with %d",
				 r, f->a, world);
			bad = 1;
		} else if (r <= 0 || r >= world) {
			snprintf(why, MAX_TEXT, "a process announced itself as rank %d, outside 1..%d",
				 r, world - 1);
			bad = 1;
		} else if (z->peers[r].fd >= 0) {
			snprintf(why, MAX_TEXT, "two processes announced themselves as rank %d", r);
			bad = 1;
		}
		if (bad) {
			send_msg(fd, MSG_REJECT, 0, 0, 0, why, strlen(why), 2);
			close(fd);
			free(f);
			break;
		}
		z->peers[r].fd = fd;
		hash[r] = h;
		got++;
		free(f);
	}
	close(lfd); /* a socket handed over by the launcher is ours too, and needed no more */
	if (!bad && got < world - 1) {
		int *missing = rt_malloc(sizeof(int) * (size_t)world), k = 0;
		for (int r = 1; r < world; r++)
			if (z->peers[r].fd < 0)
				missing[k++] = r;
		char list[256];
		rank_list(list, sizeof list, missing, k);
		snprintf(why, MAX_TEXT,
			 "rendezvous timed out after %.0f s: rank%s %s never reached rank 0 on port %d",
			 timeout, k > 1 ? "s" : "", list, cfg->port);
		free(missing);
		bad = 1;
	}
	if (!bad) {
		/* group the ranks by hash: the first group is rank 0's */
		int *diff = rt_malloc(sizeof(int) * (size_t)world), k = 0;
		for (int r = 1; r < world; r++)
			if (hash[r] != hash[0])
				diff[k++] = r;
		if (k) {
			char list[256];
			rank_list(list, sizeof list, diff, k);
			int o = snprintf(why, MAX_TEXT,
					 "ranks differ in what they will run: rank%s %s differ%s from rank 0 "
					 "(rank 0: %016llx", k > 1 ? "s" : "", list, k > 1 ? "" : "s",
					 (unsigned long long)hash[0]);
			for (int i = 0; i < k && i < 8 && o < MAX_TEXT - 64; i++)
				o += snprintf(why + o, MAX_TEXT - (size_t)o, ", rank %d: %016llx", diff[i],
					      (unsigned long long)hash[diff[i]]);
			snprintf(why + o, MAX_TEXT - (size_t)o,
				 "); every rank must run the same command, model and settings");
			bad = 1;
		}
		free(diff);
	}
	for (int r = 1; r < world; r++) {
		if (z->peers[r].fd < 0)
			continue;
		if (bad)
			send_msg(z->peers[r].fd, MSG_REJECT, 0, 0, 0, why, strlen(why), 2);
		else if (send_msg(z->peers[r].fd, MSG_WELCOME, 0, 0, 0, blob, blob_len, timeout)) {
			snprintf(why, MAX_TEXT, "rendezvous: rank %d closed its connection", r);
			bad = 1;
		}
	}
	if (bad)
		snprintf(err, errlen, "%s", why);
	free(hash);
	free(why);
	return bad ? -1 : 0;
}

static int meet_as_rank(struct rt_rdzv *z, const struct rt_rdzv_config *cfg, void *blob,
			size_t blob_len, double timeout, char *err, size_t errlen)
{
	double deadline = rt_now() + timeout;
	int fd = connect_to(cfg->addr, cfg->port, deadline, err, errlen);
	if (fd < 0)
		return -1;
	z->peers[0].fd = fd;
	unsigned char lo[4];
	put32(lo, (uint32_t)cfg->hash);
	if (send_msg(fd, MSG_HELLO, (uint32_t)z->rank, (uint32_t)z->world,
		     (uint32_t)(cfg->hash >> 32), lo, 4, timeout)) {
		snprintf(err, errlen, "rendezvous: cannot send to rank 0: %s", strerror(errno));
		return -1;
	}
	struct frame *f = rt_malloc(sizeof *f);
	int rc = -1;
	/* rank 0 answers by its own deadline, which may be later than ours: wait for its
	 * verdict a little longer, since it explains a failure best */
	if (recv_msg(fd, f, rt_now() + timeout + 5)) {
		if (errno == ETIMEDOUT)
			snprintf(err, errlen,
				 "rendezvous timed out after %.0f s waiting for rank 0 (other ranks missing?)",
				 timeout);
		else
			snprintf(err, errlen, "rendezvous: rank 0 closed the connection (%s)",
				 strerror(errno));
	} else if (f->type == MSG_REJECT) {
		snprintf(err, errlen, "%s", f->text);
	} else if (f->type != MSG_WELCOME || f->len != blob_len) {
		snprintf(err, errlen, "rendezvous: unexpected answer from rank 0 (type %u, %u bytes)",
			 f->type, f->len);
	} else {
		memcpy(blob, f->text, blob_len);
		rc = 0;
	}
	free(f);
	return rc;
}

static void *watchdog(void *arg);

struct rt_rdzv *rt_rdzv_open(const struct rt_rdzv_config *cfg, void *blob, size_t blob_len,
			     char *err, size_t errlen)
{
	if (cfg->world < 1 || cfg->rank < 0 || cfg->rank >= cfg->world) {
		snprintf(err, errlen, "rank %d is outside a world of %d", cfg->rank, cfg->world);
		return NULL;
	}
	if (blob_len > MAX_TEXT) {
		snprintf(err, errlen, "rendezvous blob of %zu bytes is too large", blob_len);
		return NULL;
	}
	struct rt_rdzv *z = rt_calloc(1, sizeof *z);
	z->rank = cfg->rank;
	z->world = cfg->world;
	z->op_timeout = cfg->op_timeout_s > 0 ? cfg->op_timeout_s
					      : env_seconds("SLUICE_COMM_TIMEOUT", 300);
	z->hb_timeout = cfg->heartbeat_timeout_s > 0 ? cfg->heartbeat_timeout_s : 30;
	z->hooks = cfg->hooks;
	z->peers = rt_calloc((size_t)cfg->world, sizeof *z->peers);
	for (int r = 0; r < cfg->world; r++)
		z->peers[r].fd = -1;
	pthread_mutex_init(&z->lock, NULL);
	pthread_cond_init(&z->cond, NULL);
	z->wake[0] = z->wake[1] = -1;
	double timeout = cfg->timeout_s > 0 ? cfg->timeout_s : env_seconds("SLUICE_RDZV_TIMEOUT", 120);
	int rc = 0;
	if (cfg->world > 1)
		rc = z->rank == 0 ? meet_as_root(z, cfg, blob, blob_len, timeout, err, errlen)
				  : meet_as_rank(z, cfg, blob, blob_len, timeout, err, errlen);
	if (!rc && pipe(z->wake)) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		rc = -1;
	}
	if (!rc) {
		double now = rt_now();
		for (int r = 0; r < z->world; r++)
			z->peers[r].last_seen = now;
		fcntl(z->wake[0], F_SETFD, FD_CLOEXEC);
		fcntl(z->wake[1], F_SETFD, FD_CLOEXEC);
		if (pthread_create(&z->thread, NULL, watchdog, z)) {
			snprintf(err, errlen, "cannot start the watchdog thread");
			rc = -1;
		}
	}
	if (rc) {
		for (int r = 0; r < z->world; r++)
			if (z->peers[r].fd >= 0)
				close(z->peers[r].fd);
		if (z->wake[0] >= 0) {
			close(z->wake[0]);
			close(z->wake[1]);
		}
		pthread_mutex_destroy(&z->lock);
		pthread_cond_destroy(&z->cond);
		free(z->peers);
		free(z);
		return NULL;
	}
	return z;
}

void rt_rdzv_set_hooks(struct rt_rdzv *z, const struct rt_rdzv_hooks *hooks)
{
	pthread_mutex_lock(&z->lock);
	z->hooks = *hooks;
	pthread_mutex_unlock(&z->lock);
}

/* Set by the first thread that ends the process (die). */
static atomic_int dying;

/* Once the process is being ended for a fault, an operation that is starting or has
 * just returned must not go on: what it computed (a timing, a result) is not to be
 * trusted, since the communicators are being aborted under it.  The thread waits for
 * the end instead. */
static void stop_if_dying(void)
{
	if (atomic_load(&dying))
		for (;;)
			pause();
}

int rt_rdzv_dying(void) { return atomic_load(&dying); }

void rt_rdzv_op_begin(struct rt_rdzv *z, const char *name)
{
	stop_if_dying();
	if (!z)
		return;
	atomic_store(&z->op_name, name);
	atomic_store(&z->op_start, rt_now());
	atomic_fetch_add(&z->ops, 1);
	atomic_store(&z->in_op, 1);
}

void rt_rdzv_op_end(struct rt_rdzv *z)
{
	if (z)
		atomic_store(&z->in_op, 0);
	stop_if_dying();
}

/* ---- faults ----------------------------------------------------------------------- */

static void on_alarm(int sig)
{
	(void)sig;
	static const char m[] = "sluice: aborting the communicators took too long; exiting\n";
	ssize_t k = write(2, m, sizeof m - 1);
	(void)k;
	_exit(1);
}

/* Print, abort the communicators, exit.  Only the first caller gets through. */
static _Noreturn void die(struct rt_rdzv *z, const char *line)
{
	int expected = 0;
	if (!atomic_compare_exchange_strong(&dying, &expected, 1))
		for (;;)
			pause(); /* another thread is already ending the process */
	/* one write, so that the lines of ranks sharing a terminal do not interleave */
	char buf[MAX_TEXT + 256];
	int k = snprintf(buf, sizeof buf, "sluice: rank %d: %s\n", z->rank, line);
	if (k >= (int)sizeof buf)
		k = (int)sizeof buf - 1;
	fflush(stderr);
	ssize_t w = write(2, buf, (size_t)k);
	(void)w;
	signal(SIGALRM, on_alarm);
	alarm(5);
	pthread_mutex_lock(&z->lock);
	struct rt_rdzv_hooks h = z->hooks;
	pthread_mutex_unlock(&z->lock);
	if (h.abort)
		h.abort(h.ctx);
	_exit(1);
}

static void lock_send(struct rt_rdzv *z, int fd, uint32_t type, uint32_t rank, uint32_t a,
		      uint32_t b, const char *text, double timeout)
{
	if (fd < 0)
		return;
	pthread_mutex_lock(&z->lock);
	send_msg(fd, type, rank, a, b, text, text ? strlen(text) : 0, timeout);
	pthread_mutex_unlock(&z->lock);
}

/* Rank 0: rank 'who' failed: tell every other rank, then stop. */
static _Noreturn void root_fault(struct rt_rdzv *z, int who, const char *what)
{
	/* the failed rank too, when it is alive (a hang): it learns why it is stopped */
	for (int r = 1; r < z->world; r++)
		if (z->peers[r].fd >= 0)
			lock_send(z, z->peers[r].fd, MSG_FAULT, (uint32_t)who, 0, 0, what, 1);
	char line[MAX_TEXT + 128];
	if (who == 0)
		snprintf(line, sizeof line, "%s; aborting communication and exiting", what);
	else
		snprintf(line, sizeof line, "rank %d failed: %s; aborting communication and exiting",
			 who, what);
	die(z, line);
}

_Noreturn void rt_rdzv_fail(struct rt_rdzv *z, const char *fmt, ...)
{
	char what[MAX_TEXT];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	if (!z) {
		fprintf(stderr, "sluice: %s\n", what);
		exit(1);
	}
	if (z->rank == 0)
		root_fault(z, 0, what);
	lock_send(z, z->peers[0].fd, MSG_FAULT, (uint32_t)z->rank, 0, 0, what, 1);
	char line[MAX_TEXT + 64];
	snprintf(line, sizeof line, "%s; aborting communication and exiting", what);
	die(z, line);
}

/* Rank 0, on a report that an operation timed out on rank 'who': blame the ranks that
 * are outside every operation (or finished), else say that all are inside one. */
static _Noreturn void root_timeout(struct rt_rdzv *z, int who, const char *what)
{
	int *idle = rt_malloc(sizeof(int) * (size_t)z->world), k = 0;
	for (int r = 0; r < z->world; r++) {
		int in_op = r == 0 ? atomic_load(&z->in_op) : z->peers[r].in_op;
		int bye = r == 0 ? z->closing : z->peers[r].said_bye;
		if (!in_op || bye)
			idle[k++] = r;
	}
	char msg[MAX_TEXT];
	if (k) {
		char list[256];
		rank_list(list, sizeof list, idle, k);
		snprintf(msg, sizeof msg,
			 "rank%s %s did not join a communication operation: rank %d waited in %s "
			 "past the timeout (%.0f s, SLUICE_COMM_TIMEOUT)",
			 k > 1 ? "s" : "", list, who, what, z->op_timeout);
		int first = idle[0];
		free(idle);
		root_fault(z, first, msg);
	}
	free(idle);
	snprintf(msg, sizeof msg,
		 "%s did not complete within %.0f s (SLUICE_COMM_TIMEOUT) while every rank was inside a "
		 "communication operation: mismatched operations across ranks, or a stuck transfer",
		 what, z->op_timeout);
	root_fault(z, who, msg);
}

/* Handles one frame from peer index i (rank 0: rank i; others: rank 0). */
static void on_frame(struct rt_rdzv *z, int i, const struct frame *f)
{
	struct peer *p = &z->peers[i];
	switch (f->type) {
	case MSG_HB:
		p->ops = f->a;
		p->in_op = (int)f->b;
		break;
	case MSG_FAULT:
		if (z->rank == 0)
			root_fault(z, i, f->text);
		else {
			char line[MAX_TEXT + 128];
			if ((int)f->rank == 0)
				snprintf(line, sizeof line,
					 "rank 0 failed: %s; aborting communication and exiting", f->text);
			else
				snprintf(line, sizeof line,
					 "rank %u failed: %s; aborting communication and exiting", f->rank,
					 f->text);
			die(z, line);
		}
		break;
	case MSG_TIMEOUT:
		if (z->rank == 0)
			root_timeout(z, i, f->text);
		break;
	case MSG_BYE:
		if (z->rank == 0 && !p->said_bye) {
			pthread_mutex_lock(&z->lock);
			p->said_bye = 1;
			z->byes++;
			pthread_cond_broadcast(&z->cond);
			pthread_mutex_unlock(&z->lock);
		}
		break;
	case MSG_BYE_ACK:
		pthread_mutex_lock(&z->lock);
		z->bye_acked = 1;
		pthread_cond_broadcast(&z->cond);
		pthread_mutex_unlock(&z->lock);
		break;
	default:
		break;
	}
}

/* Peer index i's connection closed or broke. */
static void on_closed(struct rt_rdzv *z, int i)
{
	struct peer *p = &z->peers[i];
	close(p->fd);
	p->fd = -1;
	if (z->rank == 0) {
		if (!p->said_bye)
			root_fault(z, i, "its process died (connection closed: killed, crashed or exited "
					 "early)");
		return;
	}
	pthread_mutex_lock(&z->lock);
	int acked = z->bye_acked;
	pthread_mutex_unlock(&z->lock);
	if (!acked)
		die(z, "rank 0 failed: its process died (connection closed: killed, crashed or exited "
		       "early); aborting communication and exiting");
}

static void read_peer(struct rt_rdzv *z, int i)
{
	struct peer *p = &z->peers[i];
	ssize_t k = recv(p->fd, p->buf + p->nbuf, sizeof p->buf - p->nbuf, MSG_DONTWAIT);
	if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR)) {
		on_closed(z, i);
		return;
	}
	if (k < 0)
		return;
	p->nbuf += (size_t)k;
	p->last_seen = rt_now();
	while (p->nbuf >= HDR) {
		uint32_t len = get32(p->buf + 16);
		if (len > MAX_TEXT) {
			on_closed(z, i); /* not our protocol: treat as broken */
			return;
		}
		if (p->nbuf < HDR + len)
			break;
		struct frame *f = rt_malloc(sizeof *f);
		f->type = get32(p->buf);
		f->rank = get32(p->buf + 4);
		f->a = get32(p->buf + 8);
		f->b = get32(p->buf + 12);
		f->len = len;
		memcpy(f->text, p->buf + HDR, len);
		f->text[len] = 0;
		memmove(p->buf, p->buf + HDR + len, p->nbuf - HDR - len);
		p->nbuf -= HDR + len;
		on_frame(z, i, f);
		free(f);
	}
}

static void *watchdog(void *arg)
{
	struct rt_rdzv *z = arg;
	int n = z->world;
	struct pollfd *pf = rt_calloc((size_t)n + 1, sizeof *pf);
	int *idx = rt_calloc((size_t)n + 1, sizeof *idx);
	double last_hb = 0;
	char msg[1024];
	while (!atomic_load(&z->stop)) {
		double now = rt_now();
		uint32_t ops = atomic_load(&z->ops);
		int in_op = atomic_load(&z->in_op);
		if (now - last_hb >= 1.0) {
			for (int r = 0; r < n; r++)
				if (r != z->rank && z->peers[r].fd >= 0)
					lock_send(z, z->peers[r].fd, MSG_HB, (uint32_t)z->rank, ops,
						  (uint32_t)in_op, NULL, 0.2);
			last_hb = now;
		}
		/* this rank's own operation past its timeout */
		if (in_op && now - atomic_load(&z->op_start) > z->op_timeout) {
			const char *name = atomic_load(&z->op_name);
			snprintf(msg, sizeof msg, "%s (operation %u)", name ? name : "an operation", ops);
			if (z->rank == 0)
				root_timeout(z, 0, msg);
			if (!z->timeout_reported) {
				lock_send(z, z->peers[0].fd, MSG_TIMEOUT, (uint32_t)z->rank, ops, 0, msg, 1);
				z->timeout_reported = 1;
				z->timeout_reported_at = now;
			} else if (now - z->timeout_reported_at > 10) {
				char line[1200];
				snprintf(line, sizeof line,
					 "%s did not complete within %.0f s and rank 0 did not answer",
					 msg, z->op_timeout);
				die(z, line);
			}
		}
		/* asynchronous errors of the communication layer */
		pthread_mutex_lock(&z->lock);
		struct rt_rdzv_hooks h = z->hooks;
		pthread_mutex_unlock(&z->lock);
		if (h.poll_error && h.poll_error(h.ctx, msg, sizeof msg))
			rt_rdzv_fail(z, "%s", msg);
		/* silent peers */
		for (int r = 0; r < n; r++) {
			struct peer *p = &z->peers[r];
			if (r == z->rank || p->fd < 0 || p->said_bye)
				continue;
			if (now - p->last_seen > z->hb_timeout) {
				snprintf(msg, sizeof msg,
					 "it stopped responding (no heartbeat for %.0f s: frozen, or its "
					 "node is unreachable)", z->hb_timeout);
				if (z->rank == 0)
					root_fault(z, r, msg);
				char line[1200];
				snprintf(line, sizeof line,
					 "rank 0 failed: %s; aborting communication and exiting", msg);
				die(z, line);
			}
		}
		int k = 0;
		pf[k].fd = z->wake[0];
		pf[k].events = POLLIN;
		idx[k++] = -1;
		for (int r = 0; r < n; r++)
			if (r != z->rank && z->peers[r].fd >= 0) {
				pf[k].fd = z->peers[r].fd;
				pf[k].events = POLLIN;
				idx[k++] = r;
			}
		if (poll(pf, (nfds_t)k, 100) <= 0)
			continue;
		for (int j = 1; j < k; j++)
			if (pf[j].revents && z->peers[idx[j]].fd >= 0)
				read_peer(z, idx[j]);
	}
	free(pf);
	free(idx);
	return NULL;
}

void rt_rdzv_close(struct rt_rdzv *z)
{
	if (!z)
		return;
	pthread_mutex_lock(&z->lock);
	z->closing = 1;
	if (z->rank == 0) {
		while (z->byes < z->world - 1)
			pthread_cond_wait(&z->cond, &z->lock);
		for (int r = 1; r < z->world; r++)
			if (z->peers[r].fd >= 0)
				send_msg(z->peers[r].fd, MSG_BYE_ACK, 0, 0, 0, NULL, 0, 5);
	} else {
		send_msg(z->peers[0].fd, MSG_BYE, (uint32_t)z->rank, 0, 0, NULL, 0, 5);
		while (!z->bye_acked)
			pthread_cond_wait(&z->cond, &z->lock);
	}
	pthread_mutex_unlock(&z->lock);
	atomic_store(&z->stop, 1);
	ssize_t k = write(z->wake[1], "x", 1);
	(void)k;
	pthread_join(z->thread, NULL);
	for (int r = 0; r < z->world; r++)
		if (z->peers[r].fd >= 0)
			close(z->peers[r].fd);
	close(z->wake[0]);
	close(z->wake[1]);
	pthread_mutex_destroy(&z->lock);
	pthread_cond_destroy(&z->cond);
	free(z->peers);
	free(z);
}
