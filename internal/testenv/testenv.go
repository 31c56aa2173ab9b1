// Package testenv gives integration tests what they need from the real
// Docker Engine: a client (or a skip/fail when there is none), small busybox
// images built locally FROM scratch (there is no registry to pull from), and
// a test label with cleanup, so that every test removes what it created even
// when it fails.
package testenv

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"

	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/render"
)

// Label marks every container, network and image a test creates. Its value
// is a per-test run id (RunID), so parallel tests clean up only their own.
const Label = "dev.bot-bottle.test"

// BusyboxPath is Debian's busybox-static, the userland of test images.
const BusyboxPath = "/bin/busybox"

// RequireDocker returns a client of the real engine. Without a reachable
// engine the test fails under CI=true (the engine is part of CI's contract)
// and is skipped elsewhere, saying why.
func RequireDocker(t testing.TB) *client.Client {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, perr := cli.Ping(ctx); perr != nil {
			err = fmt.Errorf("cannot reach the Docker Engine at %s: %w", cli.DaemonHost(), perr)
		}
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("this test needs the Docker Engine: %v", err)
		}
		t.Skipf("skipping: this test needs the Docker Engine: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// RunID returns a fresh value for Label and registers the removal of every
// container, network and image that carries Label=<it> when the test ends.
func RunID(t testing.TB, cli *client.Client) string {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	id := "t-" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		if err := RemoveLabelled(context.Background(), cli, Label, id); err != nil {
			t.Errorf("cleanup of %s=%s: %v", Label, id, err)
		}
	})
	return id
}

// RemoveLabelled removes the containers, networks, volumes and images
// labelled key=value. It is meant for cleanup, so it has its own deadline.
func RemoveLabelled(ctx context.Context, cli *client.Client, key, value string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	f := filters.NewArgs(filters.Arg("label", key+"="+value))
	var errs []error
	cs, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	errs = append(errs, err)
	for _, c := range cs {
		errs = append(errs, ignoreNotFound(cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})))
	}
	ns, err := cli.NetworkList(ctx, network.ListOptions{Filters: f})
	errs = append(errs, err)
	for _, n := range ns {
		err := cli.NetworkRemove(ctx, n.ID)
		// The engine lets go of a just removed container's endpoints a
		// moment after the remove returned.
		for try := 0; err != nil && try < 20 && strings.Contains(err.Error(), "active endpoints"); try++ {
			time.Sleep(250 * time.Millisecond)
			err = cli.NetworkRemove(ctx, n.ID)
		}
		errs = append(errs, ignoreNotFound(err))
	}
	vs, err := cli.VolumeList(ctx, volume.ListOptions{Filters: f})
	errs = append(errs, err)
	for _, v := range vs.Volumes {
		errs = append(errs, ignoreNotFound(cli.VolumeRemove(ctx, v.Name, true)))
	}
	is, err := cli.ImageList(ctx, image.ListOptions{All: true, Filters: f})
	errs = append(errs, err)
	errs = append(errs, removeImages(ctx, cli, is))
	return errors.Join(errs...)
}

// removeImages removes images that may be parents of one another (a
// build's intermediate images carry its labels too). Children go first,
// newest first; Created has only second resolution, so an image refused for
// having children is tried again once the others are gone.
func removeImages(ctx context.Context, cli *client.Client, is []image.Summary) error {
	sort.Slice(is, func(i, j int) bool { return is[i].Created > is[j].Created })
	for pass := 0; ; pass++ {
		var again []image.Summary
		var errs []error
		for _, im := range is {
			_, err := cli.ImageRemove(ctx, im.ID, image.RemoveOptions{Force: true, PruneChildren: true})
			switch {
			case err == nil || cerrdefs.IsNotFound(err):
			case cerrdefs.IsConflict(err) && pass < len(is):
				again = append(again, im)
			default:
				errs = append(errs, fmt.Errorf("remove image %s: %w", im.ID, err))
			}
		}
		if len(again) == 0 || len(again) == len(is) {
			for _, im := range again {
				errs = append(errs, fmt.Errorf("remove image %s: still has child images", im.ID))
			}
			return errors.Join(errs...)
		}
		is = again
	}
}

func ignoreNotFound(err error) error {
	if cerrdefs.IsNotFound(err) {
		return nil
	}
	return err
}

// Labelled lists what still carries key=value, one "kind name" per
// resource, for tests that assert nothing was left behind.
func Labelled(ctx context.Context, cli *client.Client, key, value string) ([]string, error) {
	f := filters.NewArgs(filters.Arg("label", key+"="+value))
	var out []string
	cs, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return nil, err
	}
	for _, c := range cs {
		out = append(out, "container "+strings.Join(c.Names, ","))
	}
	ns, err := cli.NetworkList(ctx, network.ListOptions{Filters: f})
	if err != nil {
		return nil, err
	}
	for _, n := range ns {
		out = append(out, "network "+n.Name)
	}
	vs, err := cli.VolumeList(ctx, volume.ListOptions{Filters: f})
	if err != nil {
		return nil, err
	}
	for _, v := range vs.Volumes {
		out = append(out, "volume "+v.Name)
	}
	is, err := cli.ImageList(ctx, image.ListOptions{All: true, Filters: f})
	if err != nil {
		return nil, err
	}
	for _, im := range is {
		out = append(out, "image "+strings.Join(append(im.RepoTags, im.ID), ","))
	}
	return out, nil
}

// Busybox describes a small test image: busybox with its applets on /bin,
// an /etc/passwd with root and agent (1000:1000), /home/agent and /tmp.
type Busybox struct {
	// User is the image's USER ("" for root), e.g. "agent" or "1000:1000".
	User string
	// Workdir is the image's WORKDIR, created and owned by agent.
	Workdir string
	// Lines are extra Dockerfile lines appended at the end.
	Lines []string
	// Files are extra files of the build context, by slash path.
	Files map[string]string
}

// Dockerfile returns the Dockerfile of the image.
func (b Busybox) Dockerfile() string {
	var df strings.Builder
	df.WriteString("FROM scratch\nCOPY rootfs/ /\n")
	setup := "/bin/busybox --install -s /bin && mkdir -p /tmp /home/agent && chmod 1777 /tmp && chown 1000:1000 /home/agent"
	if b.Workdir != "" {
		setup += " && mkdir -p " + b.Workdir + " && chown 1000:1000 " + b.Workdir
	}
	js, _ := json.Marshal([]string{"/bin/busybox", "sh", "-c", setup})
	fmt.Fprintf(&df, "RUN %s\n", js)
	df.WriteString("ENV PATH=/bin HOME=/home/agent\n")
	if b.Workdir != "" {
		fmt.Fprintf(&df, "WORKDIR %s\n", b.Workdir)
	}
	if b.User != "" {
		fmt.Fprintf(&df, "USER %s\n", b.User)
	}
	for _, l := range b.Lines {
		df.WriteString(l + "\n")
	}
	return df.String()
}

// Context writes the image's build context (Dockerfile included) to a new
// temporary directory and returns it. It needs no engine. Every context is
// unique, so every build of one makes its own layers.
func (b Busybox) Context(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	bb, err := os.ReadFile(BusyboxPath)
	if err != nil {
		t.Fatalf("test images need Debian's busybox-static at %s: %v", BusyboxPath, err)
	}
	files := map[string][]byte{
		"Dockerfile":          []byte(b.Dockerfile()),
		"rootfs/bin/busybox":  bb,
		"rootfs/etc/passwd":   []byte("root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000:agent:/home/agent:/bin/sh\n"),
		"rootfs/etc/group":    []byte("root:x:0:\nagent:x:1000:\n"),
		"rootfs/etc/hostname": []byte("bottle\n"),
	}
	// A nonce in the first layer keeps the engine's build cache from sharing
	// intermediate images between tests: one test's cleanup would otherwise
	// delete a parent that another test's build is about to reuse.
	var nonce [8]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		t.Fatal(err)
	}
	files["rootfs/etc/bot-bottle-test-nonce"] = []byte(hex.EncodeToString(nonce[:]) + "\n")
	for name, content := range b.Files {
		files[name] = []byte(content)
	}
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := fs.FileMode(0o644)
		if name == "rootfs/bin/busybox" {
			mode = 0o755
		}
		if err := os.WriteFile(p, content, mode); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Image builds the image, labelled Label=runID, and returns its ID. The
// image goes when the test's RunID cleanup runs.
func (b Busybox) Image(t testing.TB, cli *client.Client, runID string) string {
	t.Helper()
	dir := b.Context(t)
	var buf bytes.Buffer
	if err := tarDir(&buf, dir); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	resp, err := cli.ImageBuild(ctx, &buf, build.ImageBuildOptions{
		Dockerfile: "Dockerfile", Labels: map[string]string{Label: runID},
		Remove: true, ForceRemove: true, Version: build.BuilderV1,
	})
	if err != nil {
		t.Fatalf("build busybox image: %v", err)
	}
	defer resp.Body.Close()
	id, err := buildResult(resp.Body)
	if err != nil {
		t.Fatalf("build busybox image: %v", err)
	}
	return id
}

func buildResult(r io.Reader) (string, error) {
	var id string
	var log strings.Builder
	err := jsonmessage.DisplayJSONMessagesStream(r, &log, 0, false, func(m jsonmessage.JSONMessage) {
		var aux struct{ ID string }
		if m.Aux != nil && json.Unmarshal(*m.Aux, &aux) == nil && aux.ID != "" {
			id = aux.ID
		}
	})
	if err != nil {
		return "", fmt.Errorf("%v (build log: %s)", render.OneLine(err.Error()), log.String())
	}
	if id == "" {
		return "", fmt.Errorf("no image id in build output: %s", log.String())
	}
	return id, nil
}

// tarDir writes dir as an uncompressed tar. The Dockerfile COPYs it, which
// makes everything root's whoever owns the files here.
func tarDir(w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	if err := tw.AddFS(os.DirFS(dir)); err != nil {
		return fmt.Errorf("archive %s: %w", dir, err)
	}
	return tw.Close()
}

// EgressEvents reads the egress log a backend wrote at path (one
// sdk.EgressEvent JSON object per line), failing the test on a line that
// does not parse. No file means no events.
func EgressEvents(t testing.TB, path string) []sdk.EgressEvent {
	t.Helper()
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []sdk.EgressEvent
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var ev sdk.EgressEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("egress log line %q: %v", sc.Text(), err)
		}
		out = append(out, ev)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read egress log %s: %v", path, err)
	}
	return out
}
