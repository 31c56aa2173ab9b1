package config

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"
)

func TestLocateNamesTheConfigLine(t *testing.T) {
	p, home, err := userPlugins(t, "plugin \"docker\" {\n  config {\n    memory      = \"4g\"\n    subnet_pool = \"0.0.0.0/0\"\n    memroy      = \"1g\"\n  }\n}\n")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(home, "plugins.hcl")
	b := p.Block("docker")
	base := errors.New("x")
	for msg, want := range map[string]string{
		`prepare a: docker plugin config: subnet_pool "0.0.0.0/0" is too large`: fmt.Sprintf("%s:4: ", file),
		`docker plugin config: json: unknown field "memroy"`:                    fmt.Sprintf("%s:5: ", file),
		`docker plugin config: cpus 0 must be positive`:                         "",
		`something else entirely`:                                               "",
	} {
		err := b.Locate(fmt.Errorf("%s%.0w", msg, base))
		if got := err.Error(); got != want+msg {
			t.Errorf("Locate(%q) = %q, want %q", msg, got, want+msg)
		}
		if !errors.Is(err, base) {
			t.Errorf("Locate(%q) lost the wrapped error", msg)
		}
	}
	if b.Locate(nil) != nil {
		t.Error("Locate(nil) is not nil")
	}
}
