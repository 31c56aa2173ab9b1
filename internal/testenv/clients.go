package testenv

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
)

// BaseImage is the shell agent's base image, made from Debian's packages by
// scripts/base-image.sh (`make base-image`) where no registry provides it.
const BaseImage = "debian:bookworm-slim"

// clientPackages are Debian's packages of the HTTP clients agents use:
// curl (OpenSSL) and python3 with requests (which brings urllib's
// http.client too).
var clientPackages = []string{"curl", "python3-requests"}

// Clients is a bottle image with the HTTP clients agents use, as a build
// context: BaseImage with Debian's curl and python3 (urllib and requests)
// installed from .debs downloaded on the host (no registry, but Debian's
// mirror is reachable; they are cached in DebCache, keyed by version), and
// the host's node binary.
type Clients struct {
	// Files are extra files of the build context, by slash path; those
	// under bin/ are executable (COPY keeps the mode: a RUN chmod would
	// copy the file into another layer).
	Files map[string]string
	// Lines are extra Dockerfile lines, run as root before USER agent.
	Lines []string
}

// ClientsContext is the result of Clients.Context.
type ClientsContext struct {
	// Dir is the build context, its Dockerfile at Dir/Dockerfile.
	Dir string
	// Missing says, per client ("curl", "python3", "node"), why this machine
	// cannot provide it; such a client is not in the image.
	Missing map[string]string
}

// ErrUnavailable marks a client this machine cannot provide (a tool or a
// package source it lacks), as opposed to a broken test setup.
var ErrUnavailable = errors.New("not available on this machine")

// DebCache is where the clients' .debs are kept between runs: apt's own
// archive layout, one file per package and version, outside the repository.
func DebCache() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("the deb cache: %w", err)
	}
	return filepath.Join(dir, "bot-bottle", "test-debs"), nil
}

// Context writes the build context. runID labels the one container it
// creates (not started) to read the base image's package list. An error
// wrapping ErrUnavailable says what this machine lacks; any other is a
// broken setup.
func (c Clients) Context(ctx context.Context, t testing.TB, cli *client.Client, runID string) (ClientsContext, error) {
	t.Helper()
	out := ClientsContext{Dir: t.TempDir(), Missing: map[string]string{}}
	if _, err := cli.ImageInspect(ctx, BaseImage); err != nil {
		return out, fmt.Errorf("the base image %s is missing (run: make base-image): %w", BaseImage, err)
	}
	files := map[string][]byte{}
	for name, content := range c.Files {
		files[name] = []byte(content)
	}
	var df strings.Builder
	fmt.Fprintf(&df, "FROM %s\n", BaseImage)
	debs, steps, err := clientDebs(ctx, t, cli, runID)
	switch {
	case errors.Is(err, ErrUnavailable):
		out.Missing["curl"], out.Missing["python3"] = err.Error(), err.Error()
	case err != nil:
		return out, err
	default:
		var names []string
		for _, p := range debs {
			b, err := os.ReadFile(p)
			if err != nil {
				return out, err
			}
			files["debs/"+filepath.Base(p)] = b
			names = append(names, filepath.Base(p))
		}
		files["debs/install.sh"] = []byte(steps)
		df.WriteString("COPY debs/ /tmp/debs/\nRUN cd /tmp/debs && sh -e install.sh >/dev/null && rm -rf /tmp/debs\n")
		t.Logf("client image: %d debs from %s", len(names), filepath.Dir(debs[0]))
	}
	if node, err := hostNode(); err != nil {
		out.Missing["node"] = err.Error()
	} else {
		b, err := os.ReadFile(node)
		if err != nil {
			return out, fmt.Errorf("read the host's node %s: %w", node, err)
		}
		files["bin/node"] = b
		df.WriteString("COPY bin/node /usr/local/bin/node\n")
	}
	var nonce [8]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return out, err
	}
	// The nonce keeps the engine's build cache from sharing layers between
	// tests, whose cleanups remove their own images.
	fmt.Fprintf(&df, "LABEL dev.bot-bottle.test-nonce=%s\n", hex.EncodeToString(nonce[:]))
	df.WriteString("RUN useradd -m -u 1000 -s /bin/bash agent\n")
	for _, l := range c.Lines {
		df.WriteString(l + "\n")
	}
	df.WriteString("USER agent\n")
	files["Dockerfile"] = []byte(df.String())
	for name, content := range files {
		p := filepath.Join(out.Dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return out, err
		}
		mode := os.FileMode(0o644)
		if strings.HasPrefix(name, "bin/") {
			mode = 0o755
		}
		if err := os.WriteFile(p, content, mode); err != nil {
			return out, err
		}
	}
	return out, nil
}

// hostNode is the host's node binary, if it is a real file. Whether it runs
// on the base image's glibc shows only in the image.
func hostNode() (string, error) {
	p, err := exec.LookPath("node")
	if err != nil {
		return "", fmt.Errorf("no node on this host's PATH: %w", ErrUnavailable)
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", fmt.Errorf("the host's node %s: %v: %w", p, err, ErrUnavailable)
	}
	return real, nil
}

// instRE and confRE are lines of apt-get's simulation:
// "Inst NAME [OLD] (VERSION ... [ARCH])" and "Conf NAME (...".
var (
	instRE = regexp.MustCompile(`^Inst (\S+) (?:\[\S+\] )?\((\S+) .*\[(\S+)\]\)`)
	confRE = regexp.MustCompile(`^Conf (\S+) `)
)

// clientDebs returns the .debs that install clientPackages on the base
// image, and a shell script that installs them from their directory: apt
// resolves them against the image's own package list (so only what it
// lacks, at versions consistent with it) and downloads into DebCache what
// is not there yet. The script unpacks and configures in apt's order, which
// a single dpkg -i does not keep (pre-dependencies must be configured
// before what needs them is unpacked). It skips dpkg's fsyncs: the build
// commits its layer whole, or not at all.
func clientDebs(ctx context.Context, t testing.TB, cli *client.Client, runID string) ([]string, string, error) {
	t.Helper()
	if _, err := exec.LookPath("apt-get"); err != nil {
		return nil, "", fmt.Errorf("curl and python3 come from Debian's packages, and this host has no apt-get: %w", ErrUnavailable)
	}
	cache, err := DebCache()
	if err != nil {
		return nil, "", err
	}
	if err := os.MkdirAll(filepath.Join(cache, "partial"), 0o755); err != nil {
		return nil, "", fmt.Errorf("the deb cache: %w", err)
	}
	tmp := t.TempDir()
	status := filepath.Join(tmp, "status")
	if err := baseStatus(ctx, cli, runID, status); err != nil {
		return nil, "", err
	}
	apt := func(args ...string) ([]byte, error) {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		defer cancel()
		args = append([]string{"-o", "Dir::State::status=" + status, "-o", "Dir::Cache::archives=" + cache,
			"-o", "Dir::Cache::pkgcache=" + filepath.Join(tmp, "pkgcache.bin"), "-o", "Dir::Cache::srcpkgcache=" + filepath.Join(tmp, "srcpkgcache.bin"),
			"-o", "APT::Install-Recommends=false", "-y", "install"}, args...)
		cmd := exec.CommandContext(cctx, "apt-get", append(args, clientPackages...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
		return cmd.CombinedOutput()
	}
	sim, err := apt("-s")
	if err != nil {
		if bytes.Contains(sim, []byte("Unable to locate package")) || bytes.Contains(sim, []byte("has no installation candidate")) {
			return nil, "", fmt.Errorf("apt on this host has no bookworm source for %v: %w", clientPackages, ErrUnavailable)
		}
		return nil, "", fmt.Errorf("apt-get -s install %v: %v: %s", clientPackages, err, lastLines(sim, 5))
	}
	var debs []string
	var script strings.Builder
	kind := ""
	step := func(k, arg string) {
		if k != kind {
			if kind != "" {
				script.WriteString("\n")
			}
			script.WriteString(map[string]string{"Inst": "dpkg --force-unsafe-io --unpack", "Conf": "dpkg --force-unsafe-io --force-confdef --configure"}[k])
			kind = k
		}
		script.WriteString(" " + arg)
	}
	sc := bufio.NewScanner(bytes.NewReader(sim))
	for sc.Scan() {
		if m := instRE.FindStringSubmatch(sc.Text()); m != nil {
			// apt's archive names: the epoch's colon is %3a.
			name := fmt.Sprintf("%s_%s_%s.deb", m[1], strings.ReplaceAll(m[2], ":", "%3a"), m[3])
			debs = append(debs, filepath.Join(cache, name))
			step("Inst", name)
		} else if m := confRE.FindStringSubmatch(sc.Text()); m != nil {
			step("Conf", m[1])
		}
	}
	script.WriteString("\n")
	if len(debs) == 0 {
		return nil, "", fmt.Errorf("apt-get -s install %v installs nothing on %s: %s", clientPackages, BaseImage, lastLines(sim, 5))
	}
	if out, err := apt("--download-only", "-qq"); err != nil {
		return nil, "", fmt.Errorf("download %v with apt-get (Debian's mirror reachable?): %v: %s", clientPackages, err, lastLines(out, 5))
	}
	for _, p := range debs {
		if _, err := os.Stat(p); err != nil {
			return nil, "", fmt.Errorf("apt-get downloaded no %s: %w", filepath.Base(p), err)
		}
	}
	return debs, script.String(), nil
}

// baseStatus copies the base image's dpkg status file to dst, out of a
// container created (never started) for it and removed at once.
func baseStatus(ctx context.Context, cli *client.Client, runID, dst string) error {
	c, err := cli.ContainerCreate(ctx, &container.Config{Image: BaseImage, Labels: map[string]string{Label: runID}}, nil, nil, nil, "")
	if err != nil {
		return fmt.Errorf("read %s's packages: %w", BaseImage, err)
	}
	defer cli.ContainerRemove(context.WithoutCancel(ctx), c.ID, container.RemoveOptions{Force: true})
	rc, _, err := cli.CopyFromContainer(ctx, c.ID, "/var/lib/dpkg/status")
	if err != nil {
		return fmt.Errorf("read %s's packages: %w", BaseImage, err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	if _, err := tr.Next(); err != nil {
		return fmt.Errorf("read %s's packages: %w", BaseImage, err)
	}
	b, err := io.ReadAll(tr)
	if err != nil {
		return fmt.Errorf("read %s's packages: %w", BaseImage, err)
	}
	return os.WriteFile(dst, b, 0o644)
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
