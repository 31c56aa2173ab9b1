package main_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/bot-bottle/bot-bottle/internal/testenv"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// BenchmarkStartTrue compares a whole bottle run of `true` through the plugin
// (Prepare, Launch from a cached image, Attach, Stop) with a bare
// `docker run --rm <same image> true`, alternating the two in one run. It
// reports both medians and their ratio (target ≤ 1.5).
func BenchmarkStartTrue(b *testing.B) {
	e := newBenchEnv(b)
	ctx := context.Background()
	a := e.agent("bench")
	// Warm the image cache; the first launch builds.
	warm := e.identity("bench")
	_, h, _ := e.launch(ctx, e.spec(a, warm, "true"))
	e.run(ctx, h, nil)
	e.stop(ctx, sdk.StopRequest{Handle: &h})
	insp, err := e.cli.ImageList(ctx, imageListByLabel("dev.bot-bottle.agent", "bench"))
	if err != nil || len(insp) == 0 {
		b.Fatalf("no cached image: %v", err)
	}
	img := insp[0].ID

	var plugin, bare []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		id := e.identity("bench")
		_, h, _ := e.launch(ctx, e.spec(a, id, "true"))
		if s := e.run(ctx, h, nil); s.status.Code != 0 {
			b.Fatalf("bottle exit %+v", s)
		}
		e.stop(ctx, sdk.StopRequest{Handle: &h})
		plugin = append(plugin, time.Since(start))

		start = time.Now()
		if out, err := exec.Command("docker", "run", "--rm", "--label", "dev.bot-bottle.test="+e.label, img, "true").CombinedOutput(); err != nil {
			b.Fatalf("docker run: %v: %s", err, out)
		}
		bare = append(bare, time.Since(start))
	}
	b.StopTimer()
	reportVsDockerRun(b, plugin, bare)
}

// reportVsDockerRun puts both medians and their ratio in the output.
func reportVsDockerRun(b *testing.B, plugin, bare []time.Duration) {
	mp, mb := median(plugin), median(bare)
	b.ReportMetric(float64(mp.Milliseconds()), "plugin-ms")
	b.ReportMetric(float64(mb.Milliseconds()), "docker-run-ms")
	b.ReportMetric(float64(mp)/float64(mb), "ratio")
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// BenchmarkResumeFromSnapshot compares a bottle run of `true` from a
// committed snapshot (Prepare, Launch, Attach, Stop) with a bare
// `docker run --rm <snapshot> true`, alternating.
func BenchmarkResumeFromSnapshot(b *testing.B) {
	e := newBenchEnv(b)
	ctx := context.Background()
	a := e.agent("benchsnap")
	id := e.identity("benchsnap")
	spec := e.spec(a, id, "sleep", "300")
	spec.Detach = true
	_, h, _ := e.launch(ctx, spec)
	cr, err := e.p.be.Commit(ctx, h, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	e.stop(ctx, sdk.StopRequest{Handle: &h})

	var plugin, bare []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		rs := e.spec(a, id, "true")
		rs.CommittedImage = cr.Image
		rs.Resume = true
		_, h, _ := e.launch(ctx, rs)
		if s := e.run(ctx, h, nil); s.status.Code != 0 {
			b.Fatalf("bottle exit %+v", s)
		}
		e.stop(ctx, sdk.StopRequest{Handle: &h})
		plugin = append(plugin, time.Since(start))

		start = time.Now()
		if out, err := exec.Command("docker", "run", "--rm", "--label", "dev.bot-bottle.test="+e.label, cr.Image, "true").CombinedOutput(); err != nil {
			b.Fatalf("docker run: %v: %s", err, out)
		}
		bare = append(bare, time.Since(start))
	}
	b.StopTimer()
	reportVsDockerRun(b, plugin, bare)
}

// BenchmarkEgressDownload100MiB downloads 100 MiB from an upstream container
// the benchmark starts, from a bottle through its egress proxy and from a
// plain container of the bottle's image on the upstream's network without
// a proxy: same image, same upstream, same hops but the proxy and the
// bottle's own network. Two proxied paths, each against direct with the
// same client, the four alternating in one run (each pair's order swapped
// every other run): the plain-HTTP forward (busybox wget, through
// http_proxy) against wget direct, and the CONNECT tunnel, the path an
// agent's https takes (busybox nc sending the CONNECT and, in the tunnel,
// a GET; the bytes are the proxy's to move untouched, so TLS inside would
// cost both sides alike), against nc direct. It reports each path's
// median as MB/s, each proxied/direct ratio, and the CPU time the engine
// accounts per download to all the containers (client, upstream, proxy):
// on a machine busy with other work the wall-time ratio tends to the CPU
// ratio, which the load does not move; and the proxy container's alone.
// Run it with -benchtime 10x or more: the medians are over b.N runs.
func BenchmarkEgressDownload100MiB(b *testing.B) {
	const size = 100 << 20
	e := newBenchEnv(b)
	ctx := context.Background()
	tn := e.network(ctx)
	upIP := tn.upstream(ctx, "big", size>>20, "big.bb.test")
	a := e.agent("benchdl")
	id := e.identity("benchdl")
	spec := e.spec(a, id, "sleep", "3600")
	spec.Detach = true
	spec.Egress = []string{"big.bb.test:80"}
	e.configure(noKeptProxy(map[string]any{"egress_networks": []string{tn.name}}))
	_, h, _ := e.launch(ctx, spec)
	defer e.stop(ctx, sdk.StopRequest{Handle: &h})
	// The direct side: the bottle's own image, on the upstream's network.
	insp, err := e.cli.ContainerInspect(ctx, "bot-bottle-"+id)
	if err != nil {
		b.Fatal(err)
	}
	out, err := exec.Command("docker", "run", "-d", "--label", "dev.bot-bottle.test="+e.label, "--network", tn.name, insp.Image, "sleep", "3600").CombinedOutput()
	if err != nil {
		b.Fatalf("start the direct container: %v: %s", err, out)
	}
	direct := strings.TrimSpace(string(out))
	upstream := containerAt(ctx, b, e, tn.name, upIP)
	proxy := handleProxy(b, h)
	// Taken after every download: a path's CPU time is what all four
	// containers used during its download (the other paths' idle).
	all := []string{proxy, insp.ID, direct, upstream}
	type path struct {
		name             string
		ctr, script      string
		wall, used, prox []time.Duration
	}
	const get = `GET /big HTTP/1.0\r\nHost: big.bb.test\r\n\r\n`
	forward := &path{name: "forward", ctr: "bot-bottle-" + id, script: "wget -q -O - http://big.bb.test/big"}
	wgetDirect := &path{name: "direct-wget", ctr: direct, script: "wget -q -Y off -O - http://" + upIP + "/big"}
	tunnel := &path{name: "connect", ctr: "bot-bottle-" + id, script: `p=${http_proxy#http://}; p=${p%/}; printf "CONNECT big.bb.test:80 HTTP/1.1\r\nHost: big.bb.test:80\r\n\r\n` + get + `" | nc ${p%:*} ${p##*:}`}
	ncDirect := &path{name: "direct-nc", ctr: direct, script: `printf "` + get + `" | nc ` + upIP + ` 80`}
	var last []time.Duration
	download := func(p *path, keep bool) {
		cmd := []string{"exec", p.ctr, "sh", "-c", p.script + " >/dev/null"}
		if !keep {
			// Once, counting: the whole body arrives on this path.
			cmd[len(cmd)-1] = p.script + " | wc -c"
		}
		start := time.Now()
		out, err := exec.Command("docker", cmd...).CombinedOutput()
		if err != nil {
			b.Fatalf("docker %v: %v: %s", cmd, err, out)
		}
		wall := time.Since(start)
		if !keep {
			if n, err := strconv.Atoi(strings.TrimSpace(string(out))); err != nil || n < size || n > size+1024 {
				b.Fatalf("%s: %q bytes arrived, want the %d of the body (and headers)", p.name, out, size)
			}
		}
		now := cpuTimes(ctx, b, e, all...)
		if keep {
			var used time.Duration
			for i := range now {
				used += now[i] - last[i]
			}
			p.wall = append(p.wall, wall)
			p.used = append(p.used, used)
			p.prox = append(p.prox, now[0]-last[0])
		}
		last = now
	}
	pairs := [][2]*path{{forward, wgetDirect}, {tunnel, ncDirect}}
	for _, pr := range pairs { // warm every path, and check what arrives
		download(pr[0], false)
		download(pr[1], false)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, pr := range pairs {
			download(pr[i%2], true)
			download(pr[1-i%2], true)
		}
	}
	b.StopTimer()
	rate := func(d time.Duration) float64 { return float64(size) / 1e6 / d.Seconds() }
	for _, pr := range pairs {
		px, dx := pr[0], pr[1]
		mp, md := median(px.wall), median(dx.wall)
		b.ReportMetric(rate(mp), px.name+"-MB/s")
		b.ReportMetric(rate(md), dx.name+"-MB/s")
		b.ReportMetric(float64(md)/float64(mp), px.name+"/direct")
		cp, cd := median(px.used), median(dx.used)
		b.ReportMetric(float64(cp.Milliseconds()), px.name+"-cpu-ms")
		b.ReportMetric(float64(cd.Milliseconds()), dx.name+"-cpu-ms")
		b.ReportMetric(float64(cd)/float64(cp), px.name+"-cpu-direct/proxied")
		b.ReportMetric(float64(median(px.prox).Milliseconds()), px.name+"-proxy-cpu-ms")
	}
}

// containerAt is the ID of the container with address ip on network.
func containerAt(ctx context.Context, b *testing.B, e *env, network, ip string) string {
	n, err := e.cli.NetworkInspect(ctx, network, networkInspectOptions())
	if err != nil {
		b.Fatal(err)
	}
	for cid, ep := range n.Containers {
		if strings.HasPrefix(ep.IPv4Address, ip+"/") {
			return cid
		}
	}
	b.Fatalf("no container at %s on %s", ip, network)
	return ""
}

// cpuTimes is the CPU time the engine has accounted to each of the
// containers so far (what `docker exec` runs in one is accounted to it).
// The engine may take a second to answer for one, so all are asked at once.
func cpuTimes(ctx context.Context, b *testing.B, e *env, ids ...string) []time.Duration {
	used := make([]time.Duration, len(ids))
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() {
			r, err := e.cli.ContainerStatsOneShot(ctx, id)
			if err != nil {
				errs[i] = fmt.Errorf("stats of %s: %w", id, err)
				return
			}
			defer r.Body.Close()
			var s container.StatsResponse
			if err := json.NewDecoder(r.Body).Decode(&s); err != nil {
				errs[i] = fmt.Errorf("stats of %s: %w", id, err)
				return
			}
			used[i] = time.Duration(s.CPUStats.CPUUsage.TotalUsage)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
	return used
}

// noKeptProxy is extra, the plugin config of an egress benchmark, with
// keep_egress_proxy off: every egress benchmark says it, so that none
// measures whatever the default is.
func noKeptProxy(extra map[string]any) map[string]any {
	m := map[string]any{"keep_egress_proxy": false}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

// BenchmarkEgressStart compares, alternating in one run, the start latency
// (Prepare, Launch from a cached image, Attach until `true` exits) of a
// bottle with egress control and of one without (no network) with a bare
// `docker run --rm <same image> true`, and times each one's Stop apart.
// Another egress bottle of the home runs throughout, as in a home in use:
// the home's proxy is up, so this is the start of a bottle that finds it
// (BenchmarkEgressStartCold is the first of a home).
func BenchmarkEgressStart(b *testing.B) {
	e := newBenchEnv(b)
	e.configure(noKeptProxy(nil))
	ctx := context.Background()
	a := e.agent("benchst")
	resident := e.spec(a, e.identity("benchst"), "sleep", "3600")
	resident.Detach, resident.Egress = true, []string{"big.bb.test:80"}
	_, rh, _ := e.launch(ctx, resident)
	defer e.stop(ctx, sdk.StopRequest{Handle: &rh})
	benchEgressStart(b, e, a)
}

// BenchmarkEgressStartCold is BenchmarkEgressStart with no other bottle in
// the home: every egress start makes the home's proxy and every egress stop
// removes it.
func BenchmarkEgressStartCold(b *testing.B) {
	e := newBenchEnv(b)
	e.configure(noKeptProxy(nil))
	benchEgressStart(b, e, e.agent("benchst"))
}

// BenchmarkEgressStartKept is BenchmarkEgressStartCold with
// keep_egress_proxy: no other bottle runs, but the home's proxy stays after
// each last stop, so every start finds it. Prune's Stop of the idle proxy
// removes it at the end.
func BenchmarkEgressStartKept(b *testing.B) {
	e := newBenchEnv(b)
	e.configure(map[string]any{"keep_egress_proxy": true})
	defer func() {
		ctx := context.Background()
		bottles, err := e.p.be.List(ctx)
		if err != nil {
			b.Fatal(err)
		}
		for _, bt := range bottles {
			if bt.Status == "idle" {
				e.stop(ctx, sdk.StopRequest{Identity: bt.Identity})
			}
		}
		if left := e.sharedLeft(ctx); len(left) > 0 {
			b.Errorf("left after prune: %v", left)
		}
	}()
	benchEgressStart(b, e, e.agent("benchst"))
}

func benchEgressStart(b *testing.B, e *env, a sdk.Agent) {
	ctx := context.Background()
	run := func(egress []string) (start, stop time.Duration) {
		id := e.identity("benchst")
		spec := e.spec(a, id, "true")
		spec.Egress = egress
		t0 := time.Now()
		_, h, _ := e.launch(ctx, spec)
		if s := e.run(ctx, h, nil); s.status.Code != 0 {
			b.Fatalf("bottle exit %+v", s)
		}
		start = time.Since(t0)
		t0 = time.Now()
		e.stop(ctx, sdk.StopRequest{Handle: &h})
		return start, time.Since(t0)
	}
	// Warm the agent and proxy image caches.
	run([]string{"big.bb.test:80"})
	img := e.cachedImage(ctx, "benchst")
	var with, without, bare, stopWith, stopWithout []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		bare = append(bare, e.dockerRun(img))
		s, t := run([]string{"big.bb.test:80"})
		with, stopWith = append(with, s), append(stopWith, t)
		s, t = run(nil)
		without, stopWithout = append(without, s), append(stopWithout, t)
	}
	b.StopTimer()
	mw, mo, mb := median(with), median(without), median(bare)
	b.ReportMetric(float64(mw.Milliseconds()), "egress-start-ms")
	b.ReportMetric(float64(mo.Milliseconds()), "no-egress-start-ms")
	b.ReportMetric(float64(mb.Milliseconds()), "docker-run-ms")
	b.ReportMetric(float64(mw)/float64(mo), "start-ratio")
	b.ReportMetric(float64(mw)/float64(mb), "egress/docker-run")
	b.ReportMetric(float64(mo)/float64(mb), "no-egress/docker-run")
	sw, so := median(stopWith), median(stopWithout)
	b.ReportMetric(float64(sw.Milliseconds()), "egress-stop-ms")
	b.ReportMetric(float64(so.Milliseconds()), "no-egress-stop-ms")
	b.ReportMetric(float64(sw)/float64(max(so, time.Millisecond)), "stop-ratio")
}

// BenchmarkEgressResume compares resuming a bottle with egress control from
// its snapshot (Prepare, Launch, Attach until `true` exits) with a bare
// `docker run --rm <snapshot> true`, alternating; Stop is not timed.
func BenchmarkEgressResume(b *testing.B) {
	e := newBenchEnv(b)
	e.configure(noKeptProxy(nil))
	ctx := context.Background()
	a := e.agent("benchres")
	egress := []string{"big.bb.test:80"}
	id, cr := e.committedEgressBottle(b, a, "benchres", egress)
	resume := func() time.Duration {
		rs := e.spec(a, id, "true")
		rs.CommittedImage, rs.Resume, rs.Egress = cr.Image, true, egress
		t0 := time.Now()
		_, h, _ := e.launch(ctx, rs)
		if s := e.run(ctx, h, nil); s.status.Code != 0 {
			b.Fatalf("bottle exit %+v", s)
		}
		d := time.Since(t0)
		e.stop(ctx, sdk.StopRequest{Handle: &h})
		return d
	}
	// Another egress bottle of the home runs throughout (see
	// BenchmarkEgressStart).
	resident := e.spec(a, e.identity("benchres"), "sleep", "3600")
	resident.Detach, resident.Egress = true, egress
	_, rh, _ := e.launch(ctx, resident)
	defer e.stop(ctx, sdk.StopRequest{Handle: &rh})
	resume() // warm
	var plugin, bare []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		plugin = append(plugin, resume())
		bare = append(bare, e.dockerRun(cr.Image))
	}
	b.StopTimer()
	mp, mb := median(plugin), median(bare)
	b.ReportMetric(float64(mp.Milliseconds()), "egress-resume-ms")
	b.ReportMetric(float64(mb.Milliseconds()), "docker-run-ms")
	b.ReportMetric(float64(mp)/float64(mb), "ratio")
}

// BenchmarkEgressConcurrentStarts launches 20 bottles with egress control
// at once (detached, from a cached image) and reports the wall time of the
// launches and of stopping them all at once; it fails when anything of
// theirs is left.
func BenchmarkEgressConcurrentStarts(b *testing.B) {
	const n = 20
	e := newBenchEnv(b)
	e.configure(noKeptProxy(nil))
	ctx := context.Background()
	a := e.agent("benchmany")
	launch := func() (sdk.Handle, error) {
		spec := e.spec(a, e.identity("benchmany"), "sleep", "300")
		spec.Detach, spec.Egress = true, []string{"big.bb.test:80"}
		plan, err := e.p.be.Prepare(ctx, spec)
		if err != nil {
			return sdk.Handle{}, err
		}
		return e.p.be.Launch(ctx, spec, plan, nil)
	}
	if h, err := launch(); err != nil { // warm the image caches
		b.Fatal(err)
	} else {
		e.stop(ctx, sdk.StopRequest{Handle: &h})
	}
	var starts, stops []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		hs, errs := make([]sdk.Handle, n), make([]error, n)
		var wg sync.WaitGroup
		t0 := time.Now()
		for j := range n {
			wg.Add(1)
			go func() { defer wg.Done(); hs[j], errs[j] = launch() }()
		}
		wg.Wait()
		starts = append(starts, time.Since(t0))
		t0 = time.Now()
		for j := range n {
			if errs[j] != nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[j] = e.p.be.Stop(ctx, sdk.StopRequest{Handle: &hs[j]})
			}()
		}
		wg.Wait()
		stops = append(stops, time.Since(t0))
		if err := errors.Join(errs...); err != nil {
			b.Fatal(err)
		}
		for _, h := range hs {
			if left := e.leftovers(ctx, h.Identity); len(left) > 0 {
				b.Fatalf("left behind for %s: %v", h.Identity, left)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(median(starts).Milliseconds()), "20-starts-wall-ms")
	b.ReportMetric(float64(median(stops).Milliseconds()), "20-stops-wall-ms")
}

// cachedImage is the agent image the plugin cached for agent.
func (e *env) cachedImage(ctx context.Context, agent string) string {
	e.t.Helper()
	insp, err := e.cli.ImageList(ctx, imageListByLabel("dev.bot-bottle.agent", agent))
	if err != nil || len(insp) == 0 {
		e.t.Fatalf("no cached image: %v", err)
	}
	return insp[0].ID
}

// dockerRun times a bare `docker run --rm img true`.
func (e *env) dockerRun(img string) time.Duration {
	e.t.Helper()
	start := time.Now()
	if out, err := exec.Command("docker", "run", "--rm", "--label", "dev.bot-bottle.test="+e.label, img, "true").CombinedOutput(); err != nil {
		e.t.Fatalf("docker run: %v: %s", err, out)
	}
	return time.Since(start)
}

// BenchmarkEgressStartSteps takes a warm egress start apart (another egress
// bottle of the home runs throughout, as in BenchmarkEgressStart): the
// medians of Prepare, Launch, Attach (until `true` exits) and Stop as the
// caller sees them, of each step the plugin's debug log times inside them
// ("launch timing", "attach timing", "stop timing"), of the same for a
// bottle without egress ("no-egress." first), and of a bare `docker run
// --rm` of the same image in the same run, the anchor.
func BenchmarkEgressStartSteps(b *testing.B) {
	e := newStepsEnv(b)
	ctx := context.Background()
	a := e.agent("benchsteps")
	egress := []string{"big.bb.test:80"}
	resident := e.spec(a, e.identity("benchsteps"), "sleep", "3600")
	resident.Detach, resident.Egress = true, egress
	_, rh, _ := e.launch(ctx, resident)
	defer e.stop(ctx, sdk.StopRequest{Handle: &rh})
	img := e.cachedImage(ctx, "benchsteps")
	steps := map[string][]time.Duration{}
	one := func(keep bool, egress []string) {
		prefix := ""
		if len(egress) == 0 {
			prefix = "no-egress."
		}
		spec := e.spec(a, e.identity("benchsteps"), "true")
		spec.Egress = egress
		e.timeSteps(ctx, spec, keep, prefix, steps)
	}
	one(false, egress) // warm the caches
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		steps["docker-run"] = append(steps["docker-run"], e.dockerRun(img))
		one(true, egress)
		one(true, nil)
	}
	b.StopTimer()
	reportSteps(b, steps, map[string]string{"egress/docker-run": "start", "no-egress/docker-run": "no-egress.start"})
}

// BenchmarkEgressResumeSteps takes BenchmarkEgressResume apart as
// BenchmarkEgressStartSteps does a start: the medians of the resume's calls
// and of the steps the plugin's debug log times inside them, of the same
// for a warm egress start of the agent's image ("start." first), and of a
// bare `docker run --rm` of the snapshot, the anchor.
func BenchmarkEgressResumeSteps(b *testing.B) {
	e := newStepsEnv(b)
	ctx := context.Background()
	a := e.agent("benchressteps")
	egress := []string{"big.bb.test:80"}
	id, cr := e.committedEgressBottle(b, a, "benchressteps", egress)
	resident := e.spec(a, e.identity("benchressteps"), "sleep", "3600")
	resident.Detach, resident.Egress = true, egress
	_, rh, _ := e.launch(ctx, resident)
	defer e.stop(ctx, sdk.StopRequest{Handle: &rh})
	steps := map[string][]time.Duration{}
	resume := func(keep bool) {
		rs := e.spec(a, id, "true")
		rs.CommittedImage, rs.Resume, rs.Egress = cr.Image, true, egress
		e.timeSteps(ctx, rs, keep, "", steps)
	}
	start := func() {
		s := e.spec(a, e.identity("benchressteps"), "true")
		s.Egress = egress
		e.timeSteps(ctx, s, true, "start.", steps)
	}
	resume(false) // warm the caches
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		steps["docker-run"] = append(steps["docker-run"], e.dockerRun(cr.Image))
		resume(true)
		start()
	}
	b.StopTimer()
	reportSteps(b, steps, map[string]string{"resume/docker-run": "start", "start/docker-run": "start.start"})
}

// newStepsEnv is a benchmark's env whose plugin logs at debug, so that its
// timing lines are there to read, with keep_egress_proxy off.
// committedEgressBottle is a stopped egress bottle with a snapshot, what a
// resume benchmark resumes; its snapshot goes when the benchmark ends.
func (e *env) committedEgressBottle(b *testing.B, a sdk.Agent, name string, egress []string) (string, sdk.CommitResult) {
	ctx := context.Background()
	id := e.identity(name)
	spec := e.spec(a, id, "sleep", "300")
	spec.Detach, spec.Egress = true, egress
	_, h, _ := e.launch(ctx, spec)
	cr, err := e.p.be.Commit(ctx, h, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	e.stop(ctx, sdk.StopRequest{Handle: &h})
	b.Cleanup(func() { e.p.be.Stop(context.Background(), sdk.StopRequest{Identity: id, RemoveSnapshots: true}) })
	return id, cr
}

func newStepsEnv(b *testing.B) *env {
	cli := testenv.RequireDocker(b)
	e := &env{t: b, cli: cli, label: testenv.RunID(b, cli)}
	e.p = startPlugin(b, e.configEnv(noKeptProxy(nil)), sdk.EnvLogLevel+"=debug")
	return e
}

// timeSteps runs spec through Prepare, Launch, Attach (it must exit 0) and
// Stop and, with keep, adds to steps under prefix how long each took
// ("start" is the first three) and each step the plugin's timing lines
// gave for it meanwhile.
func (e *env) timeSteps(ctx context.Context, spec sdk.Spec, keep bool, prefix string, steps map[string][]time.Duration) {
	e.t.Helper()
	// Only this run's lines: a resumed identity has lines of earlier runs.
	logged := len(e.p.logs.String())
	t0 := time.Now()
	plan, err := e.p.be.Prepare(ctx, spec)
	if err != nil {
		e.t.Fatal(err)
	}
	t1 := time.Now()
	h, err := e.p.be.Launch(ctx, spec, plan, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	t2 := time.Now()
	if s := e.run(ctx, h, nil); s.status.Code != 0 {
		e.t.Fatalf("bottle exit %+v", s)
	}
	t3 := time.Now()
	e.stop(ctx, sdk.StopRequest{Handle: &h})
	t4 := time.Now()
	if !keep {
		return
	}
	for k, d := range map[string]time.Duration{"prepare": t1.Sub(t0), "launch": t2.Sub(t1), "attach": t3.Sub(t2), "start": t3.Sub(t0), "stop": t4.Sub(t3)} {
		steps[prefix+k] = append(steps[prefix+k], d)
	}
	for k, d := range loggedSteps(e.p.logs.String()[logged:], spec.Identity) {
		steps[prefix+k] = append(steps[prefix+k], d)
	}
}

// reportSteps reports every step's median and, under each name of ratios,
// the median of the step it names against the "docker-run" anchor's.
func reportSteps(b *testing.B, steps map[string][]time.Duration, ratios map[string]string) {
	for k, ds := range steps {
		b.ReportMetric(float64(median(ds).Microseconds())/1000, k+"-ms")
	}
	for name, k := range ratios {
		b.ReportMetric(float64(median(steps[k]))/float64(median(steps["docker-run"])), name)
	}
}

// loggedSteps are the steps the plugin's timing lines about identity give,
// by the line's first word and the step's name ("launch.create").
func loggedSteps(logs, identity string) map[string]time.Duration {
	out := map[string]time.Duration{}
	for _, line := range strings.Split(logs, "\n") {
		i := strings.Index(line, " timing:")
		if i < 0 || !strings.Contains(line, "identity="+identity) {
			continue
		}
		f := strings.Fields(line[:i])
		what := f[len(f)-1]
		for _, kv := range strings.Fields(line[i+len(" timing:"):]) {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				continue
			}
			if d, err := time.ParseDuration(strings.Trim(v, `"`)); err == nil {
				out[what+"."+k] += d
			}
		}
	}
	return out
}
