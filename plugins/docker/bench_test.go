package main_test

import (
	"context"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

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
// the benchmark starts: from a bottle through its egress proxy, and from a
// plain container on the upstream's network without a proxy, alternating,
// both with busybox wget under `docker exec`. It reports both medians as
// MB/s and their ratio (proxied/direct).
func BenchmarkEgressDownload100MiB(b *testing.B) {
	e := newBenchEnv(b)
	ctx := context.Background()
	tn := e.network(ctx)
	upIP := tn.upstream(ctx, "big", 100, "big.bb.test")
	a := e.agent("benchdl")
	id := e.identity("benchdl")
	spec := e.spec(a, id, "sleep", "3600")
	spec.Detach = true
	spec.Egress = []string{"big.bb.test:80"}
	e.configure(map[string]any{"egress_networks": []string{tn.name}})
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
	get := func(ctr string, args ...string) time.Duration {
		start := time.Now()
		cmd := append([]string{"exec", ctr, "wget", "-q", "-O", "/dev/null"}, args...)
		if out, err := exec.Command("docker", cmd...).CombinedOutput(); err != nil {
			b.Fatalf("docker %v: %v: %s", cmd, err, out)
		}
		return time.Since(start)
	}
	get("bot-bottle-"+id, "http://big.bb.test/big") // warm both paths
	get(direct, "-Y", "off", "http://"+upIP+"/big")
	var proxied, plain []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		proxied = append(proxied, get("bot-bottle-"+id, "http://big.bb.test/big"))
		plain = append(plain, get(direct, "-Y", "off", "http://"+upIP+"/big"))
	}
	b.StopTimer()
	rate := func(d time.Duration) float64 { return 100 * 1.048576 / d.Seconds() }
	mp, md := median(proxied), median(plain)
	b.ReportMetric(rate(mp), "proxied-MB/s")
	b.ReportMetric(rate(md), "direct-MB/s")
	b.ReportMetric(float64(md)/float64(mp), "proxied/direct")
}

// BenchmarkEgressStart compares the start latency (Prepare, Launch from a
// cached image, Attach until `true` exits) of a bottle with egress control
// (two networks, a rules volume and a proxy that must listen first) with
// one without (no network), alternating. Stop is timed apart.
func BenchmarkEgressStart(b *testing.B) {
	e := newBenchEnv(b)
	ctx := context.Background()
	a := e.agent("benchst")
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
	var with, without, stopWith, stopWithout []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s, t := run([]string{"big.bb.test:80"})
		with, stopWith = append(with, s), append(stopWith, t)
		s, t = run(nil)
		without, stopWithout = append(without, s), append(stopWithout, t)
	}
	b.StopTimer()
	mw, mo := median(with), median(without)
	b.ReportMetric(float64(mw.Milliseconds()), "egress-start-ms")
	b.ReportMetric(float64(mo.Milliseconds()), "no-egress-start-ms")
	b.ReportMetric(float64(mw)/float64(mo), "start-ratio")
	b.ReportMetric(float64(median(stopWith).Milliseconds()), "egress-stop-ms")
	b.ReportMetric(float64(median(stopWithout).Milliseconds()), "no-egress-stop-ms")
}
