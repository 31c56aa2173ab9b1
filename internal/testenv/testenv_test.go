package testenv

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"
)

func TestBusyboxImageRunsAndIsCleanedUp(t *testing.T) {
	cli := RequireDocker(t)
	run := RunID(t, cli)
	id := Busybox{User: "agent", Workdir: "/work"}.Image(t, cli, run)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := cli.ContainerCreate(ctx, &container.Config{
		Image: id, Cmd: []string{"sh", "-c", "id -u; pwd; ls /bin/stty"},
		Labels: map[string]string{Label: run},
	}, nil, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	wc, ec := cli.ContainerWait(ctx, c.ID, container.WaitConditionNotRunning)
	select {
	case w := <-wc:
		if w.StatusCode != 0 {
			t.Errorf("exit code %d", w.StatusCode)
		}
	case err := <-ec:
		t.Fatal(err)
	}
	logs, err := cli.ContainerLogs(ctx, c.ID, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &errb, logs); err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(out.String()); len(got) != 3 || got[0] != "1000" || got[1] != "/work" || got[2] != "/bin/stty" {
		t.Errorf("output %q (stderr %q), want uid 1000, /work and /bin/stty", out.String(), errb.String())
	}

	left, err := Labelled(ctx, cli, Label, run)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 2 {
		t.Errorf("labelled before cleanup: %v, want the image and the container", left)
	}
	if err := RemoveLabelled(ctx, cli, Label, run); err != nil {
		t.Fatal(err)
	}
	if left, _ := Labelled(ctx, cli, Label, run); len(left) != 0 {
		t.Errorf("left after RemoveLabelled: %v", left)
	}
}

func TestDockerfileUser(t *testing.T) {
	df := Busybox{User: "1000:1000", Lines: []string{"ENV X=1"}}.Dockerfile()
	if !strings.HasPrefix(df, "FROM scratch\n") || !strings.Contains(df, "USER 1000:1000\n") || !strings.HasSuffix(df, "ENV X=1\n") {
		t.Errorf("Dockerfile:\n%s", df)
	}
	if strings.Contains(Busybox{}.Dockerfile(), "USER") {
		t.Error("root image has a USER line")
	}
}
