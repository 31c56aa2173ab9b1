package state

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

func TestUpdateMetadataLosesNothingUnderContention(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.Mint("shell", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WriteMetadata(Metadata{Identity: id, AgentName: "shell", Backend: "docker"}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Separate stores: as separate processes would, each with its
			// own lock file descriptor.
			s2, _ := Open(s.Home())
			if _, err := s2.UpdateMetadata(context.Background(), id, func(m *Metadata) error {
				m.Egress = append(m.Egress, fmt.Sprintf("h%d.example:443", i))
				return nil
			}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	m, err := s.ReadMetadata(id)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Egress) != 40 {
		t.Fatalf("%d hosts kept, want 40: %v", len(m.Egress), m.Egress)
	}
}
