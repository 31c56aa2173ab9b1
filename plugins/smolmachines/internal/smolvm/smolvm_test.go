package smolvm

import (
	"errors"
	"strings"
	"testing"
)

func TestErrorMessage(t *testing.T) {
	for _, tc := range []struct{ stderr, want string }{
		{"Starting...\nError: vm not found: bb-x\n", "vm not found: bb-x"},
		{"error: unexpected argument '-n' found\n\nUsage: smolvm machine exec\n", "unexpected argument '-n' found"},
		{"something odd\n\n", "something odd"},
		{"", "exited with code 3 and no message"},
	} {
		if got := ErrorMessage([]byte(tc.stderr), 3); got != tc.want {
			t.Errorf("ErrorMessage(%q) = %q, want %q", tc.stderr, got, tc.want)
		}
	}
}

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"bb-claude-7k2qz", "a", "A_b-9", strings.Repeat("a", 128)} {
		if err := ValidateName(ok); err != nil {
			t.Errorf("ValidateName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-a", "_a", "a-", "a--b", "a.b", "a:b", "a/b", strings.Repeat("a", 129)} {
		if ValidateName(bad) == nil {
			t.Errorf("ValidateName(%q) accepted", bad)
		}
	}
}

func TestIsLocalImage(t *testing.T) {
	for ref, want := range map[string]bool{"alpine": false, "ghcr.io/x/y:1": false, "/abs/x.tar": true, "./r": true,
		"x.tar.gz": true, "x.tgz": true, "-": true, "../up": true} {
		if IsLocalImage(ref) != want {
			t.Errorf("IsLocalImage(%q) = %v", ref, !want)
		}
	}
}

func TestLocateMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := Locate("")
	if err == nil || !strings.Contains(err.Error(), InstallHint) {
		t.Errorf("Locate without smolvm = %v", err)
	}
}

func TestIsNotFound(t *testing.T) {
	for msg, want := range map[string]bool{
		"vm not found: bb-x":                                true,
		"config operation failed: vm not found: bb-x":       true,
		"image 'alpine:3' not found on the host":            false,
		"cp: '/no/such' not found":                          false,
		"pack failed: layer not found":                      false,
		"vm not found":                                      false,
		"machine 'bb-x' already exists or is being created": false,
	} {
		if got := IsNotFound(&Error{Code: 1, Msg: msg}); got != want {
			t.Errorf("IsNotFound(%q) = %v, want %v", msg, got, want)
		}
	}
	if IsNotFound(errors.New("vm not found: bb-x")) {
		t.Error("IsNotFound accepted an error that is not smolvm's")
	}
}
