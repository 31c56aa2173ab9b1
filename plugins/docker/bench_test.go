package main_test

import (
	"context"
	"os/exec"
	"sort"
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
	mp, mb := median(plugin), median(bare)
	b.ReportMetric(float64(mp.Milliseconds()), "plugin-ms")
	b.ReportMetric(float64(mb.Milliseconds()), "docker-run-ms")
	b.ReportMetric(float64(mp)/float64(mb), "ratio")
}
