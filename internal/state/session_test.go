package state

import "testing"

func TestDetachedMarkerAndHandleRemoval(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.Mint("shell", nil)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := s.IsDetached(id); d {
		t.Fatal("new bottle must not be detached")
	}
	if err := s.MarkDetached(id); err != nil {
		t.Fatal(err)
	}
	if d, _ := s.IsDetached(id); !d {
		t.Fatal("marker not seen")
	}
	if err := s.ClearDetached(id); err != nil {
		t.Fatal(err)
	}
	if d, _ := s.IsDetached(id); d {
		t.Fatal("marker not cleared")
	}
	if err := s.ClearDetached(id); err != nil {
		t.Fatalf("clearing twice: %v", err)
	}
	if _, err := s.IsDetached("../x"); err == nil {
		t.Fatal("invalid identity accepted")
	}
}
