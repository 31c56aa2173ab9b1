package buildsrc

import (
	"testing"

	"github.com/bot-bottle/bot-bottle/sdk"
)

func TestContextDir(t *testing.T) {
	for _, c := range []struct {
		agent      sdk.Agent
		dockerfile string
		want       string
	}{
		{sdk.Agent{ContextDir: "/ctx", Dockerfile: "/a/Dockerfile"}, "/b/Dockerfile", "/ctx"},
		{sdk.Agent{Dockerfile: "/a/Dockerfile"}, "/b/Dockerfile", "/a"},
		{sdk.Agent{Image: "img"}, "/b/Dockerfile", "/b"},
	} {
		if got := ContextDir(c.agent, c.dockerfile); got != c.want {
			t.Errorf("ContextDir(%+v, %s) = %s, want %s", c.agent, c.dockerfile, got, c.want)
		}
	}
}
