package main_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/backendtest"
)

// BenchmarkStartToFirstOutput measures a bottle's start to its first
// output on the test cluster (Prepare, Launch, Attach, through the real
// plugin process), against `kubectl run --rm -i` of the same image in the
// same run; ratio is bottle/kubectl.
func BenchmarkStartToFirstOutput(b *testing.B) {
	e := newEnv(b)
	be := backendtest.Start(b, e.pluginBin, e.configEnv()...)
	ref := e.repo + "/probe:1"
	mustRun(b, nil, "docker", "tag", e.image, ref)
	mustRun(b, nil, "sh", "-c", `docker save "$1" | ctr -a `+containerdSok+` -n k8s.io images import - >/dev/null`, "load", ref)
	// Once each, so that image loads and first-use costs are not measured.
	bottleFirstOutput(b, e, be, 0)
	kubectlFirstOutput(b, e, ref, 0)
	var bottle, kube time.Duration
	for i := 0; i < b.N; i++ {
		bottle += bottleFirstOutput(b, e, be, i+1)
		kube += kubectlFirstOutput(b, e, ref, i+1)
	}
	b.ReportMetric(float64(bottle.Milliseconds())/float64(b.N), "bottle-ms")
	b.ReportMetric(float64(kube.Milliseconds())/float64(b.N), "kubectl-ms")
	b.ReportMetric(float64(bottle)/float64(kube), "ratio")
}

func bottleFirstOutput(b *testing.B, e *env, be sdk.Backend, i int, egress ...string) time.Duration {
	ctx := context.Background()
	spec := sdk.Spec{Identity: fmt.Sprintf("bench-%s-%d", e.runID, i), Agent: e.agent("bench"), Command: []string{"echo", "ready"}, Egress: egress}
	if len(egress) > 0 {
		spec.Identity = fmt.Sprintf("bench-eg-%s-%d", e.runID, i)
		dir := b.TempDir()
		spec.EgressLog = dir + "/" + spec.Identity + ".jsonl"
	}
	t0 := time.Now()
	plan, err := be.Prepare(ctx, spec)
	if err != nil {
		b.Fatal(err)
	}
	h, err := be.Launch(ctx, spec, plan, func(sdk.Progress) {})
	if err != nil {
		b.Fatal(err)
	}
	defer be.Stop(ctx, sdk.StopRequest{Handle: &h, Identity: spec.Identity, RemoveSnapshots: true})
	fw := &firstWrite{at: make(chan time.Time, 1)}
	if _, err := be.Attach(ctx, sdk.AttachRequest{Handle: h}, sdk.AttachStreams{Stdout: fw, Stderr: io.Discard}); err != nil {
		b.Fatal(err)
	}
	if fw.first.IsZero() {
		b.Fatal("the bottle printed nothing")
	}
	return fw.first.Sub(t0)
}

func kubectlFirstOutput(b *testing.B, e *env, ref string, i int) time.Duration {
	name := fmt.Sprintf("bench-kubectl-%s-%d", e.runID, i)
	fw := &firstWrite{at: make(chan time.Time, 1)}
	cmd := exec.Command(kubectl(), "--kubeconfig", e.kubeconfig, "run", name, "--rm", "-i", "--quiet", "--image", ref,
		"--image-pull-policy", "Never", "--restart", "Never",
		"--overrides", `{"spec":{"nodeName":"`+testNode+`","automountServiceAccountToken":false}}`, "--command", "--", "sh", "-c", "read x; echo ready")
	// Input stays open until the output is there: an early end of input
	// races the attach of kubectl's output stream.
	pr, pw := io.Pipe()
	go func() {
		_, _ = io.WriteString(pw, "go\n")
		<-fw.at
		_ = pw.Close()
	}()
	cmd.Stdin = pr
	var errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = fw, &errOut
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		b.Fatalf("kubectl run: %v\n%s", err, errOut.String())
	}
	return fw.first.Sub(t0)
}

// firstWrite records when the first byte arrived.
type firstWrite struct {
	once  sync.Once
	at    chan time.Time
	first time.Time
}

func (w *firstWrite) Write(p []byte) (int, error) {
	if len(p) > 0 {
		w.once.Do(func() {
			w.first = time.Now()
			w.at <- w.first
		})
	}
	return len(p), nil
}

// BenchmarkStartWithEgress measures a bottle with an allowlist from its
// start to its first output (its proxy pod first, the agent pod's
// lockdown, the proxy's setup), against
// the same bottle with no allowlist in the same run; ratio is
// egress/none.
func BenchmarkStartWithEgress(b *testing.B) {
	e := newEnv(b)
	be := backendtest.Start(b, e.pluginBin, e.configEnv()...)
	bottleFirstOutput(b, e, be, 0, "example.invalid:443")
	bottleFirstOutput(b, e, be, 0)
	var with, without time.Duration
	for i := 0; i < b.N; i++ {
		with += bottleFirstOutput(b, e, be, i+1, "example.invalid:443")
		without += bottleFirstOutput(b, e, be, i+1)
	}
	b.ReportMetric(float64(with.Milliseconds())/float64(b.N), "egress-ms")
	b.ReportMetric(float64(without.Milliseconds())/float64(b.N), "none-ms")
	b.ReportMetric(float64(with)/float64(without), "ratio")
}

// BenchmarkAttachRoundTrip measures a line sent to an attached agent
// (cat) coming back, through the plugin, the API server and the kubelet.
func BenchmarkAttachRoundTrip(b *testing.B) {
	e := newEnv(b)
	be := backendtest.Start(b, e.pluginBin, e.configEnv()...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	spec := sdk.Spec{Identity: "bench-rt-" + e.runID, Agent: e.agent("bench"), Command: []string{"cat"}}
	plan, err := be.Prepare(ctx, spec)
	if err != nil {
		b.Fatal(err)
	}
	h, err := be.Launch(ctx, spec, plan, func(sdk.Progress) {})
	if err != nil {
		b.Fatal(err)
	}
	defer be.Stop(context.Background(), sdk.StopRequest{Handle: &h, Identity: spec.Identity, RemoveSnapshots: true})
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	go func() {
		_, _ = be.Attach(ctx, sdk.AttachRequest{Handle: h, Stdin: true}, sdk.AttachStreams{Stdin: inR, Stdout: outW, Stderr: io.Discard})
		outW.Close()
	}()
	buf := make([]byte, 5)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := io.WriteString(inW, "ping\n"); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(outR, buf); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	inW.Close()
}

// BenchmarkConcurrentStarts measures 20 bottles started at once (Launch,
// Attach to their exit, Stop) through one plugin process.
func BenchmarkConcurrentStarts(b *testing.B) {
	e := newEnv(b)
	be := backendtest.Start(b, e.pluginBin, e.configEnv()...)
	const n = 20
	for i := 0; i < b.N; i++ {
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for j := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx := context.Background()
				spec := sdk.Spec{Identity: fmt.Sprintf("bench-c-%s-%d-%d", e.runID, i, j), Agent: e.agent("bench"), Command: []string{"true"}}
				plan, err := be.Prepare(ctx, spec)
				if err == nil {
					var h sdk.Handle
					if h, err = be.Launch(ctx, spec, plan, func(sdk.Progress) {}); err == nil {
						var st sdk.ExitStatus
						st, err = be.Attach(ctx, sdk.AttachRequest{Handle: h}, sdk.AttachStreams{Stdout: io.Discard, Stderr: io.Discard})
						if err == nil && st.Code != 0 {
							err = fmt.Errorf("exit %d", st.Code)
						}
					}
				}
				_, serr := be.Stop(ctx, sdk.StopRequest{Identity: spec.Identity, RemoveSnapshots: true})
				if err == nil {
					err = serr
				}
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}
