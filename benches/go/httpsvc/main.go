// httpsvc: a small HTTP service with map-heavy handlers, the target of the
// "Real service" section of benches/overhead.sh.
//
//	httpsvc -port 8080 [-counts FILE]
//
// Two maps, each behind a mutex:
//
//	sessions map[string]*session   /login?sid=S creates, /get?sid=S reads and
//	                               updates (through the pointer), /logout?sid=S
//	                               deletes; a janitor deletes sessions idle
//	                               for longer than -session-ttl.
//	cache    map[string]cacheEntry /put?k=K assigns (evicting one entry when
//	                               the cache holds -cache-size keys), /fetch?k=K
//	                               reads and deletes the entry once expired.
//
// Every assign and delete statement on them is counted (a delete of an absent
// key too: the runtime is called all the same). On SIGTERM or SIGINT the
// counts go, as one JSON object, to -counts (or stderr), and the process
// exits 0. The counts cover only these two maps: net/http and net/url write
// maps of their own (headers, query values) that a probe on the runtime sees
// as well.
package main

import (
	"encoding/json"
	"flag"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type session struct {
	user     string
	created  int64
	lastSeen int64
	hits     int64
}

type cacheEntry struct {
	val     []byte
	expires int64
}

// opCounts are the service's own exact counts for one map.
type opCounts struct {
	Delete uint64 `json:"delete"`
	Assign uint64 `json:"assign"`
}

type sessionStore struct {
	mu     sync.Mutex
	m      map[string]*session
	counts opCounts
}

type cache struct {
	mu     sync.Mutex
	m      map[string]cacheEntry
	max    int
	ttl    time.Duration
	counts opCounts
	// evictions and expiries are among counts.Delete; shown apart.
	evictions, expiries uint64
}

var (
	sessions = &sessionStore{m: make(map[string]*session)}
	store    *cache
	requests atomic.Uint64
	payload  = make([]byte, 4096)
)

func (s *sessionStore) login(sid, user string) {
	now := time.Now().UnixNano()
	s.mu.Lock()
	s.m[sid] = &session{user: user, created: now, lastSeen: now}
	s.counts.Assign++
	s.mu.Unlock()
}

// get reads a session and updates it in place; false when there is none.
func (s *sessionStore) get(sid string) (string, int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	se, ok := s.m[sid]
	if !ok {
		return "", 0, false
	}
	se.hits++
	se.lastSeen = time.Now().UnixNano()
	return se.user, se.hits, true
}

func (s *sessionStore) logout(sid string) {
	s.mu.Lock()
	delete(s.m, sid)
	s.counts.Delete++
	s.mu.Unlock()
}

// expire deletes sessions idle since before cutoff.
func (s *sessionStore) expire(cutoff int64) {
	s.mu.Lock()
	for k, se := range s.m {
		if se.lastSeen < cutoff {
			delete(s.m, k)
			s.counts.Delete++
		}
	}
	s.mu.Unlock()
}

func (c *cache) put(k string, v []byte) {
	exp := time.Now().Add(c.ttl).UnixNano()
	c.mu.Lock()
	if _, ok := c.m[k]; !ok && len(c.m) >= c.max {
		for victim := range c.m { // Go's map order: an arbitrary entry
			delete(c.m, victim)
			c.counts.Delete++
			c.evictions++
			break
		}
	}
	c.m[k] = cacheEntry{val: v, expires: exp}
	c.counts.Assign++
	c.mu.Unlock()
}

func (c *cache) fetch(k string) ([]byte, bool) {
	now := time.Now().UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok {
		return nil, false
	}
	if e.expires < now {
		delete(c.m, k)
		c.counts.Delete++
		c.expiries++
		return nil, false
	}
	return e.val, true
}

func handleLogin(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	sid := q.Get("sid")
	if sid == "" {
		http.Error(w, "sid missing", http.StatusBadRequest)
		return
	}
	user := q.Get("user")
	if user == "" {
		user = "user-" + sid
	}
	sessions.login(sid, user)
	w.Header().Set("Content-Type", "text/plain")
	w.Write([]byte("ok " + sid + "\n"))
}

func handleGet(w http.ResponseWriter, r *http.Request) {
	user, hits, ok := sessions.get(r.URL.Query().Get("sid"))
	if !ok {
		http.Error(w, "no session", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Write([]byte(user + " " + strconv.FormatInt(hits, 10) + "\n"))
}

func handleLogout(w http.ResponseWriter, r *http.Request) {
	sessions.logout(r.URL.Query().Get("sid"))
	w.Header().Set("Content-Type", "text/plain")
	w.Write([]byte("bye\n"))
}

func handlePut(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	k := q.Get("k")
	n, _ := strconv.Atoi(q.Get("n"))
	if n <= 0 || n > len(payload) {
		n = 256
	}
	v := make([]byte, n)
	copy(v, payload)
	store.put(k, v)
	w.Header().Set("Content-Type", "text/plain")
	w.Write([]byte("stored\n"))
}

func handleFetch(w http.ResponseWriter, r *http.Request) {
	v, ok := store.fetch(r.URL.Query().Get("k"))
	if !ok {
		w.WriteHeader(http.StatusNoContent) // a miss
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(v)
}

// counted wraps a handler with the request counter.
func counted(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		h(w, r)
	}
}

// report writes the counts and exits, holding both locks so that no map
// operation can follow the snapshot.
func report(path string) {
	sessions.mu.Lock()
	store.mu.Lock()
	sc, cc := sessions.counts, store.counts
	out, err := json.Marshal(map[string]any{
		"delete":   sc.Delete + cc.Delete,
		"assign":   sc.Assign + cc.Assign,
		"requests": requests.Load(),
		"maps": map[string]any{
			"sessions": map[string]any{"map_type": "map[string]*main.session", "delete": sc.Delete,
				"assign": sc.Assign, "len": len(sessions.m)},
			"cache": map[string]any{"map_type": "map[string]main.cacheEntry", "delete": cc.Delete,
				"assign": cc.Assign, "evictions": store.evictions, "expiries": store.expiries, "len": len(store.m)},
		},
	})
	if err == nil {
		out = append(out, '\n')
		if path == "" {
			_, err = os.Stderr.Write(out)
		} else {
			err = os.WriteFile(path, out, 0o644)
		}
	}
	if err != nil {
		os.Stderr.WriteString("httpsvc: " + err.Error() + "\n")
		os.Exit(1)
	}
	os.Exit(0)
}

func main() {
	port := flag.Int("port", 8080, "listen on 127.0.0.1:PORT")
	countsPath := flag.String("counts", "", "write the exact map counts here on SIGTERM/SIGINT (default stderr)")
	cacheSize := flag.Int("cache-size", 2048, "cache entries before an eviction")
	cacheTTL := flag.Duration("cache-ttl", 2*time.Second, "cache entry lifetime")
	sessionTTL := flag.Duration("session-ttl", 30*time.Second, "idle time after which the janitor deletes a session")
	flag.Parse()
	store = &cache{m: make(map[string]cacheEntry), max: *cacheSize, ttl: *cacheTTL}

	mux := http.NewServeMux()
	mux.HandleFunc("/login", counted(handleLogin))
	mux.HandleFunc("/get", counted(handleGet))
	mux.HandleFunc("/logout", counted(handleLogout))
	mux.HandleFunc("/put", counted(handlePut))
	mux.HandleFunc("/fetch", counted(handleFetch))

	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(*port))
	if err != nil {
		os.Stderr.WriteString("httpsvc: " + err.Error() + "\n")
		os.Exit(1)
	}
	go func() {
		for range time.Tick(time.Second) {
			sessions.expire(time.Now().Add(-*sessionTTL).UnixNano())
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go http.Serve(ln, mux)
	os.Stderr.WriteString("httpsvc: listening on " + ln.Addr().String() + "\n")
	<-sig
	ln.Close()
	report(*countsPath)
}
