package agenttest_test

import (
	"archive/tar"
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
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsimple"

	botbottle "github.com/bot-bottle/bot-bottle"
)

// baseImage is the FROM of agents/shell/Dockerfile; scripts/base-image.sh
// provides it where no registry is reachable.
const baseImage = "debian:bookworm-slim"

// testLabel marks everything these tests create, so a crashed run's leftovers
// can be found with `docker image ls -f label=dev.bot-bottle.test`.
const testLabel = "dev.bot-bottle.test"

// agentDef is the part of agent.hcl these tests check against the image.
type agentDef struct {
	Dockerfile     string   `hcl:"dockerfile,optional"`
	Command        []string `hcl:"command"`
	ResumeCommand  []string `hcl:"resume_command,optional"`
	Workdir        string   `hcl:"workdir,optional"`
	Env            []string `hcl:"env,optional"`
	TranscriptPath string   `hcl:"transcript_path,optional"`
	Egress         []string `hcl:"egress,optional"`
	Rest           hcl.Body `hcl:",remain"`
}

// requireEngine returns a client of the real engine. Without one the test
// fails under CI (where the engine is part of the contract) and is skipped
// elsewhere.
func requireEngine(t *testing.T) *client.Client {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err = cli.Ping(ctx)
	}
	if err != nil {
		missing(t, fmt.Sprintf("Docker Engine not reachable: %v", err))
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// missing reports a missing prerequisite: fatal under CI=true, a skip elsewhere.
func missing(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip(why)
}

func randomSuffix(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("random suffix: %v", err)
	}
	return hex.EncodeToString(b)
}

// contextTar packs fsys as a docker build context.
func contextTar(fsys fs.FS) (io.Reader, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == "." {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return fmt.Errorf("tar header %s: %w", p, err)
		}
		hdr.Name = p
		if d.IsDir() {
			hdr.Name += "/"
		}
		// Embedded files have no mode bits worth keeping; give them sane ones.
		hdr.Mode = 0o644
		if d.IsDir() {
			hdr.Mode = 0o755
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("tar header %s: %w", p, err)
		}
		if d.IsDir() {
			return nil
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("pack build context: %w", err)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("pack build context: %w", err)
	}
	return &buf, nil
}

// buildAgent builds the agent's Dockerfile from the files embedded in the
// binary, with no network, and removes the image when the test ends.
func buildAgent(ctx context.Context, t *testing.T, cli *client.Client, fsys fs.FS, dockerfile string) string {
	t.Helper()
	buildCtx, err := contextTar(fsys)
	if err != nil {
		t.Fatal(err)
	}
	tag := "bot-bottle-agenttest/shell:" + randomSuffix(t)
	resp, err := cli.ImageBuild(ctx, buildCtx, build.ImageBuildOptions{
		Tags:        []string{tag},
		Dockerfile:  dockerfile,
		Labels:      map[string]string{testLabel: "agenttest"},
		Remove:      true,
		ForceRemove: true,
		// The Dockerfile promises a build without network access.
		NetworkMode: "none",
	})
	if err != nil {
		t.Fatalf("build %s: %v", tag, err)
	}
	defer resp.Body.Close()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := cli.ImageRemove(ctx, tag, image.RemoveOptions{Force: true, PruneChildren: true})
		if err != nil && !strings.Contains(err.Error(), "No such image") {
			t.Errorf("remove image %s: %v", tag, err)
		}
	})

	var log strings.Builder
	dec := json.NewDecoder(resp.Body)
	for {
		var m jsonmessage.JSONMessage
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("build %s: read progress: %v\n%s", tag, err, log.String())
		}
		log.WriteString(m.Stream)
		if m.Error != nil {
			t.Fatalf("build %s: %s\n%s", tag, m.Error.Message, log.String())
		}
	}
	insp, err := cli.ImageInspect(ctx, tag)
	if err != nil {
		t.Fatalf("inspect built image %s: %v\n%s", tag, err, log.String())
	}
	if insp.Config == nil || insp.Config.Labels[testLabel] != "agenttest" {
		t.Fatalf("built image %s lacks the label %s", tag, testLabel)
	}
	return insp.ID
}

type result struct {
	stdout, stderr string
	code           int64
}

// run starts cmd in a container of img hardened the way the Docker backend
// runs bottles (no capabilities, no-new-privileges, pids limit, no network),
// feeds it stdin when non-empty, and returns its output and exit code.
func run(ctx context.Context, t *testing.T, cli *client.Client, img string, stdin string, cmd ...string) result {
	t.Helper()
	pids := int64(256)
	cfg := &container.Config{
		Image:     img,
		Cmd:       cmd,
		Labels:    map[string]string{testLabel: "agenttest"},
		OpenStdin: stdin != "",
		StdinOnce: stdin != "",
	}
	hostCfg := &container.HostConfig{
		CapDrop:     []string{"ALL"},
		SecurityOpt: []string{"no-new-privileges"},
		NetworkMode: "none",
		Resources:   container.Resources{PidsLimit: &pids, Memory: 256 << 20},
	}
	created, err := cli.ContainerCreate(ctx, cfg, hostCfg, nil, nil, "")
	if err != nil {
		t.Fatalf("create container for %q: %v", cmd, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := cli.ContainerRemove(ctx, created.ID, container.RemoveOptions{Force: true}); err != nil {
			t.Errorf("remove container %s: %v", created.ID, err)
		}
	})
	att, err := cli.ContainerAttach(ctx, created.ID, container.AttachOptions{
		Stream: true, Stdin: stdin != "", Stdout: true, Stderr: true,
	})
	if err != nil {
		t.Fatalf("attach to %q: %v", cmd, err)
	}
	defer att.Close()
	if err := cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		t.Fatalf("start %q: %v", cmd, err)
	}
	if stdin != "" {
		if _, err := io.WriteString(att.Conn, stdin); err != nil {
			t.Fatalf("write stdin of %q: %v", cmd, err)
		}
		if err := att.CloseWrite(); err != nil {
			t.Fatalf("close stdin of %q: %v", cmd, err)
		}
	}
	var stdout, stderr bytes.Buffer
	if _, err := stdcopy.StdCopy(&stdout, &stderr, att.Reader); err != nil {
		t.Fatalf("read output of %q: %v", cmd, err)
	}
	waitC, errC := cli.ContainerWait(ctx, created.ID, container.WaitConditionNotRunning)
	select {
	case w := <-waitC:
		if w.Error != nil {
			t.Fatalf("wait for %q: %s", cmd, w.Error.Message)
		}
		return result{stdout.String(), stderr.String(), w.StatusCode}
	case err := <-errC:
		t.Fatalf("wait for %q: %v", cmd, err)
	}
	panic("unreachable")
}

// mustRun is run for commands that have to succeed.
func mustRun(ctx context.Context, t *testing.T, cli *client.Client, img string, cmd ...string) string {
	t.Helper()
	r := run(ctx, t, cli, img, "", cmd...)
	if r.code != 0 {
		t.Fatalf("%q exited %d\nstdout: %s\nstderr: %s", cmd, r.code, r.stdout, r.stderr)
	}
	return strings.TrimSpace(r.stdout)
}

func TestShellAgent(t *testing.T) {
	cli := requireEngine(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	if _, err := cli.ImageInspect(ctx, baseImage); err != nil {
		missing(t, fmt.Sprintf("base image %s is missing (%v); provide it with `make base-image` (scripts/base-image.sh)", baseImage, err))
	}

	fsys, err := fs.Sub(botbottle.BuiltinAgents, "agents/shell")
	if err != nil {
		t.Fatal(err)
	}
	src, err := fs.ReadFile(fsys, "agent.hcl")
	if err != nil {
		t.Fatalf("built-in shell agent: %v", err)
	}
	var def agentDef
	if err := hclsimple.Decode("agent.hcl", src, nil, &def); err != nil {
		t.Fatalf("decode agents/shell/agent.hcl: %v", err)
	}
	if def.Dockerfile == "" || len(def.Command) == 0 || def.Workdir == "" || def.TranscriptPath == "" {
		t.Fatalf("agents/shell/agent.hcl lacks dockerfile, command, workdir or transcript_path: %+v", def)
	}
	if len(def.Env) != 0 || len(def.Egress) != 0 {
		t.Errorf("the shell agent should pass no env and allow no egress, has env=%q egress=%q", def.Env, def.Egress)
	}

	img := buildAgent(ctx, t, cli, fsys, def.Dockerfile)

	t.Run("non-root user agent", func(t *testing.T) {
		insp, err := cli.ImageInspect(ctx, img)
		if err != nil {
			t.Fatal(err)
		}
		if u := insp.Config.User; u == "" || u == "root" || u == "0" {
			t.Errorf("image user = %q, want a non-root user", u)
		}
		if got := mustRun(ctx, t, cli, img, "sh", "-c", `echo "$(id -u):$(id -g):$(id -un):$HOME"`); got != "1000:1000:agent:/home/agent" {
			t.Errorf("uid:gid:user:home = %q, want 1000:1000:agent:/home/agent", got)
		}
	})

	t.Run("workdir owned by agent", func(t *testing.T) {
		if insp, err := cli.ImageInspect(ctx, img); err != nil {
			t.Fatal(err)
		} else if insp.Config.WorkingDir != def.Workdir {
			t.Errorf("image WorkingDir = %q, agent.hcl workdir = %q", insp.Config.WorkingDir, def.Workdir)
		}
		got := mustRun(ctx, t, cli, img, "sh", "-c", `pwd; stat -c %U "$PWD"; touch "$PWD/probe" && echo writable`)
		if want := def.Workdir + "\nagent\nwritable"; got != want {
			t.Errorf("workdir check = %q, want %q", got, want)
		}
	})

	t.Run("agent command runs a login bash", func(t *testing.T) {
		// The command from agent.hcl, fed a script on stdin as a user would type it.
		script := "echo shell-$((6*7)); echo \"$0|$BASH_VERSION|$PWD|$HISTFILE\"; exit 5\n"
		r := run(ctx, t, cli, img, script, def.Command...)
		if r.code != 5 {
			t.Fatalf("%q exited %d, want 5 (the script's exit)\nstdout: %s\nstderr: %s", def.Command, r.code, r.stdout, r.stderr)
		}
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if len(lines) != 2 || lines[0] != "shell-42" {
			t.Fatalf("output = %q, want shell-42 and a status line", r.stdout)
		}
		f := strings.Split(lines[1], "|")
		if len(f) != 4 || !strings.HasSuffix(f[0], "bash") || !strings.HasPrefix(f[1], "5.") || f[2] != def.Workdir || f[3] != def.TranscriptPath {
			t.Errorf("$0|$BASH_VERSION|$PWD|$HISTFILE = %q, want bash|5.*|%s|%s", lines[1], def.Workdir, def.TranscriptPath)
		}
		if r.stderr != "" {
			t.Errorf("login shell wrote to stderr: %q", r.stderr)
		}
	})

	t.Run("transcript is written as commands run", func(t *testing.T) {
		// An interactive login shell appends each command to the transcript
		// path before the next prompt, so a mid-session copy-out sees it.
		script := "echo typed-marker-1 >/dev/null\ncat " + def.TranscriptPath + "\nexit 0\n"
		r := run(ctx, t, cli, img, script, append(append([]string{}, def.Command...), "-i")...)
		if r.code != 0 || !strings.Contains(r.stdout, "echo typed-marker-1 >/dev/null") {
			t.Errorf("transcript did not record the first command; exit %d\nstdout: %q\nstderr: %q", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("usual tools", func(t *testing.T) {
		tools := []string{
			"bash", "sh", "ls", "cat", "cp", "mv", "rm", "mkdir", "chmod", "env", "id",
			"grep", "sed", "awk", "find", "xargs", "sort", "head", "tail", "wc", "tr", "cut",
			"tar", "gzip", "xz", "bzip2", "file", "diff", "stty", "tput", "clear",
			"ps", "top", "kill", "pkill", "free", "killall", "less", "more", "wget", "ip", "openssl",
		}
		got := mustRun(ctx, t, cli, img, "bash", "-c",
			`for t in `+strings.Join(tools, " ")+`; do command -v "$t" >/dev/null || echo "missing: $t"; done`)
		if got != "" {
			t.Errorf("tools missing from the shell agent:\n%s", got)
		}
		// Present is not enough: they have to work in the hardened bottle.
		if got := mustRun(ctx, t, cli, img, "ps", "-o", "user=", "-p", "1"); got != "agent" {
			t.Errorf("ps -o user= -p 1 = %q, want agent", got)
		}
		if got := mustRun(ctx, t, cli, img, "sh", "-c", "printf 'a\\nb\\n' | less -F | wc -l; tput -T xterm cols"); got != "2\n80" {
			t.Errorf("less/tput = %q, want \"2\\n80\"", got)
		}
		if got := mustRun(ctx, t, cli, img, "sh", "-c", "grep -c 'BEGIN CERTIFICATE' /etc/ssl/certs/ca-certificates.crt"); got == "" || got == "0" {
			t.Errorf("CA bundle has %q certificates, want some", got)
		}
	})

	t.Run("no way back to root", func(t *testing.T) {
		// With no-new-privileges and no capabilities, setuid binaries must
		// not grant root; and there is no sudo to ask.
		got := mustRun(ctx, t, cli, img, "sh", "-c", "command -v sudo || echo no-sudo; su -c id root </dev/null >/dev/null 2>&1 && echo su-worked || echo su-refused")
		if got != "no-sudo\nsu-refused" {
			t.Errorf("privilege check = %q, want no-sudo and su-refused", got)
		}
	})
}
