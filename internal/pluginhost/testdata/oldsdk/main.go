// Command bot-bottle-plugin-echo is the smallest useful example of a
// backend: its "bottle" echoes the user's input back, upper-cased, and exits
// with the status the agent command names. It shows every required method,
// a progress stream, a handle, and an optional capability left out.
package main

import (
	"bufio"
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/bot-bottle/bot-bottle/sdk"
)

type echo struct {
	sdk.UnimplementedBackend // Commit, Exec, Copy…: "not supported"
}

func (echo) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{Name: "echo", Version: "1.0.0", APIVersions: []string{sdk.APIVersion}}, nil
}

func (echo) Prepare(_ context.Context, spec sdk.Spec) (sdk.Plan, error) {
	if len(spec.Command) == 0 {
		return sdk.Plan{}, fmt.Errorf("prepare %s: no command", spec.Identity)
	}
	return sdk.Plan{Preflight: []sdk.PreflightLine{{Key: "command", Value: strings.Join(spec.Command, " ")}}}, nil
}

func (echo) Launch(ctx context.Context, spec sdk.Spec, _ sdk.Plan, progress func(sdk.Progress)) (sdk.Handle, error) {
	progress(sdk.Progress{Stage: "launch", Message: "ready"})
	// Everything Attach will need travels in the handle: plugins keep no state.
	return sdk.Handle{Version: 1, Backend: "echo", Identity: spec.Identity, Data: []byte(strings.Join(spec.Command, " "))}, nil
}

func (echo) Attach(ctx context.Context, req sdk.AttachRequest, s sdk.AttachStreams) (sdk.ExitStatus, error) {
	if s.Stdin != nil {
		sc := bufio.NewScanner(s.Stdin)
		for sc.Scan() {
			fmt.Fprintln(s.Stdout, strings.ToUpper(sc.Text()))
		}
	}
	if ctx.Err() != nil {
		return sdk.ExitStatus{Detached: true}, nil
	}
	code, _ := strconv.Atoi(strings.TrimPrefix(string(req.Handle.Data), "exit "))
	fmt.Fprintf(s.Stderr, "bye from %s\n", req.Handle.Identity)
	return sdk.ExitStatus{Code: code}, nil
}

func (echo) Stop(_ context.Context, req sdk.StopRequest) ([]string, error) { return nil, nil }

func (echo) List(context.Context) ([]sdk.Bottle, error) { return nil, nil }

func main() {
	sdk.Serve(echo{}, sdk.WithLogger(sdk.NewLogger("echo")))
}
