package sdk

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"
	"time"
)

// The core's go-plugin reads a plugin's stderr lines as hclog JSON: @level,
// @message and @timestamp in hclog's layout; anything else it shows as one
// unparsed debug line. NewLogger must write exactly that shape.
func TestLoggerWritesWhatTheCoreParses(t *testing.T) {
	var buf bytes.Buffer
	log := newLogger(&buf, "mine", levelFromString("debug"))
	log.Log(t.Context(), LevelTrace, "hidden below debug")
	log.Warn("engine warning", "identity", "shell-7k2qz", "n", 3)
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("one JSON line expected, got %q: %v", buf.String(), err)
	}
	if m["@level"] != "warn" || m["@message"] != "engine warning" || m["@module"] != "mine" || m["identity"] != "shell-7k2qz" || m["n"] != 3.0 {
		t.Fatalf("line %v", m)
	}
	ts, _ := m["@timestamp"].(string)
	if _, err := time.Parse("2006-01-02T15:04:05.000000Z07:00", ts); err != nil {
		t.Fatalf("@timestamp %q is not in hclog's layout: %v", ts, err)
	}
}

func TestLevelNamesRoundTrip(t *testing.T) {
	for _, name := range []string{"trace", "debug", "info", "warn", "error"} {
		if got := levelName(levelFromString(name)); got != name {
			t.Errorf("level %q comes back as %q", name, got)
		}
	}
	if levelFromString("") != slog.LevelInfo || levelFromString("bogus") != slog.LevelInfo {
		t.Error("an unset or unknown level must be info")
	}
}
