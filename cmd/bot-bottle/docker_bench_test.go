package main_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/testenv"
)

// benchHome makes a bot-bottle home whose docker resources carry the test
// label, so the benchmark removes everything it made.
func benchHome(b *testing.B) (home string, run func(args ...string) (string, error)) {
	cli := testenv.RequireDocker(b)
	if _, err := cli.ImageInspect(context.Background(), "debian:bookworm-slim"); err != nil {
		b.Skipf("skipping: base image missing (run: make base-image): %v", err)
	}
	runID := testenv.RunID(b, cli)
	home = b.TempDir()
	hcl := fmt.Sprintf("plugin \"docker\" {\n  config {\n    labels = { %q = %q }\n  }\n}\n", testenv.Label, runID)
	if err := os.WriteFile(filepath.Join(home, "plugins.hcl"), []byte(hcl), 0o600); err != nil {
		b.Fatal(err)
	}
	run = func(args ...string) (string, error) {
		cmd := exec.Command(filepath.Join(binDir, "bot-bottle"), args...)
		cmd.Env = append(os.Environ(), "BOT_BOTTLE_HOME="+home)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("bot-bottle %v: %v\n%s", args, err, out)
		}
		return string(out), nil
	}
	return home, run
}

func timed(f func() error) (time.Duration, error) {
	t0 := time.Now()
	err := f()
	return time.Since(t0), err
}

// dockerRunTrue is the anchor: a bare `docker run --rm <image> true`.
func dockerRunTrue(image string) error {
	out, err := exec.Command("docker", "run", "--rm", image, "true").CombinedOutput()
	if err != nil {
		return fmt.Errorf("docker run: %v: %s", err, out)
	}
	return nil
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// report puts both medians and their ratio in the benchmark's output; the
// ratio is the figure the target is about (≤ 1.5).
func report(b *testing.B, ours, bare []time.Duration) {
	mo, mb := median(ours), median(bare)
	b.ReportMetric(float64(mo.Milliseconds()), "ms-bot-bottle")
	b.ReportMetric(float64(mb.Milliseconds()), "ms-docker-run")
	b.ReportMetric(float64(mo)/float64(mb), "ratio")
}

var agentImage = regexp.MustCompile(`bot-bottle-agent/shell:[0-9a-f]+`)

// BenchmarkStartVsDockerRun: `bot-bottle start shell -- true` with a cached
// image against `docker run --rm <same image> true`, alternating, one run.
func BenchmarkStartVsDockerRun(b *testing.B) {
	_, run := benchHome(b)
	// Warm the image cache (a build on the first start only).
	if _, err := run("start", "shell", "--", "true"); err != nil {
		b.Fatal(err)
	}
	out, err := exec.Command("docker", "images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", "label=dev.bot-bottle.agent=shell").Output()
	if err != nil {
		b.Fatal(err)
	}
	img := agentImage.FindString(string(out))
	if img == "" {
		b.Fatalf("no shell agent image in %q", out)
	}
	var ours, bare []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d, err := timed(func() error { _, err := run("start", "shell", "--", "true"); return err })
		if err != nil {
			b.Fatal(err)
		}
		ours = append(ours, d)
		d, err = timed(func() error { return dockerRunTrue(img) })
		if err != nil {
			b.Fatal(err)
		}
		bare = append(bare, d)
	}
	b.StopTimer()
	report(b, ours, bare)
}

var committed = regexp.MustCompile(`as (bot-bottle/\S+);`)

// BenchmarkResumeFromSnapshotVsDockerRun: `bot-bottle resume` of a committed
// bottle against `docker run --rm <snapshot> true`, alternating. Making each
// snapshot is not timed.
func BenchmarkResumeFromSnapshotVsDockerRun(b *testing.B) {
	_, run := benchHome(b)
	var ours, bare []time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		out, err := run("start", "shell", "--detach", "--", "sleep", "300")
		if err != nil {
			b.Fatal(err)
		}
		m := idPattern.FindStringSubmatch(out)
		if m == nil {
			b.Fatalf("no identity in %q", out)
		}
		id := m[1]
		out, err = run("commit", id)
		if err != nil {
			b.Fatal(err)
		}
		img := committed.FindStringSubmatch(out)
		if img == nil {
			b.Fatalf("no snapshot in %q", out)
		}
		if _, err := run("stop", id); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		d, err := timed(func() error { _, err := run("resume", id, "--", "true"); return err })
		if err != nil {
			b.Fatal(err)
		}
		ours = append(ours, d)
		d, err = timed(func() error { return dockerRunTrue(img[1]) })
		if err != nil {
			b.Fatal(err)
		}
		bare = append(bare, d)
		b.StopTimer()
		_ = exec.Command("docker", "rmi", img[1]).Run()
		b.StartTimer()
	}
	b.StopTimer()
	report(b, ours, bare)
}
