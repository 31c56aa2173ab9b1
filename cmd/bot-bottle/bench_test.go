package main_test

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// BenchmarkVersionProcess runs `bot-bottle version` as a whole process, the
// way a shell prompt or completion script would. Target: ≤ 20 ms.
func BenchmarkVersionProcess(b *testing.B) {
	bin := filepath.Join(binDir, "bot-bottle")
	for i := 0; i < b.N; i++ {
		if out, err := exec.Command(bin, "version").CombinedOutput(); err != nil {
			b.Fatalf("%v: %s", err, out)
		}
	}
}

// BenchmarkTrueProcess is the anchor: the cheapest process this machine can
// start, so the version figure can be read as a ratio.
func BenchmarkTrueProcess(b *testing.B) {
	for i := 0; i < b.N; i++ {
		if err := exec.Command("true").Run(); err != nil {
			b.Fatal(err)
		}
	}
}
