// Command namedplugin is a do-nothing backend plugin for pluginhost's
// install tests: its Info name and API version are set at build time, so
// that a test can build plugins of several names (and broken ones) cheaply:
//
//	go build -ldflags "-X main.name=alpha -X main.api=1.0.0" ./internal/namedplugin
package main

import (
	"context"
	"errors"

	"github.com/bot-bottle/bot-bottle/sdk"
)

var (
	name = "named"
	api  = sdk.APIVersion
)

var errNothing = errors.New("namedplugin runs no bottles")

type backend struct{ sdk.UnimplementedBackend }

func (backend) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{Name: name, Version: "0.0.1", APIVersions: []string{api}}, nil
}

func (backend) Prepare(context.Context, sdk.Spec) (sdk.Plan, error) { return sdk.Plan{}, errNothing }

func (backend) Launch(context.Context, sdk.Spec, sdk.Plan, func(sdk.Progress)) (sdk.Handle, error) {
	return sdk.Handle{}, errNothing
}

func (backend) Attach(context.Context, sdk.AttachRequest, sdk.AttachStreams) (sdk.ExitStatus, error) {
	return sdk.ExitStatus{}, errNothing
}

func (backend) Stop(context.Context, sdk.StopRequest) ([]string, error) { return nil, nil }

func (backend) List(context.Context) ([]sdk.Bottle, error) { return nil, nil }

func main() { sdk.Serve(backend{}) }
