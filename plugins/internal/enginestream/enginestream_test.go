package enginestream

import (
	"strings"
	"testing"
)

func TestReadStopsAtTheEnginesError(t *testing.T) {
	in := `{"stream":"Step 1/2 : FROM x\n"}
{"aux":{"ID":"sha256:abc"}}
{"errorDetail":{"message":"boom\nsecond line"},"error":"boom"}
{"stream":"never seen"}
`
	var streams []string
	var id string
	err := Read(strings.NewReader(in), func(m Message) {
		streams = append(streams, m.Stream)
		if i := m.ImageID(); i != "" {
			id = i
		}
	})
	if err == nil || err.Error() != "boom; second line" {
		t.Fatalf("err = %v", err)
	}
	if id != "sha256:abc" || len(streams) != 2 || strings.Contains(strings.Join(streams, ""), "never") {
		t.Fatalf("id %q streams %q", id, streams)
	}
	if err := Read(strings.NewReader(`{"stream":`), func(Message) {}); err == nil {
		t.Fatal("truncated stream accepted")
	}
}
