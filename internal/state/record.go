package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/bot-bottle/bot-bottle/sdk"
)

const (
	snapshotsFile    = "snapshots"
	builtFile        = "built.json"
	snapshotsLimit   = 64 << 10
	builtLimit       = 4 << 20
	maxSnapshotLines = 1000
)

// Record is everything the state dir says about one bottle, read at once.
// Flows load it once and change it through the lifecycle's transitions,
// which write back exactly the parts they change.
type Record struct {
	Meta Metadata
	// Kept: the bottle's state survives the end of its sessions until rm.
	Kept bool
	// Detached: it runs with no bot-bottle process attached, on purpose.
	Detached bool
	// Handle is the backend's handle while a launch is open, else nil.
	Handle *sdk.Handle
	// CommittedImage is the snapshot a resume boots, or "".
	CommittedImage string
	// Snapshots are every snapshot reference the bottle's commits made,
	// oldest first: they belong to the bottle and go with it.
	Snapshots []string
	// Dockerfile is the bottle's own Dockerfile, or nil.
	Dockerfile []byte
}

// Load reads a bottle's whole record. A missing bottle is ErrNoBottle
// naming the bottles that exist; a corrupt part is ErrCorrupt naming it.
func (s *Store) Load(id string) (*Record, error) {
	m, err := s.ReadMetadata(id)
	if err != nil {
		return nil, err
	}
	r := &Record{Meta: m}
	if r.Kept, err = s.IsPreserved(id); err != nil {
		return nil, err
	}
	if r.Detached, err = s.IsDetached(id); err != nil {
		return nil, err
	}
	if r.Handle, err = s.ReadHandle(id); err != nil {
		return nil, err
	}
	if r.CommittedImage, err = s.ReadCommittedImage(id); err != nil {
		return nil, err
	}
	if r.Snapshots, err = s.ReadSnapshots(id); err != nil {
		return nil, err
	}
	if r.Dockerfile, err = s.ReadDockerfile(id); err != nil {
		return nil, err
	}
	return r, nil
}

// AddSnapshot records ref as the bottle's newest snapshot: the one a resume
// boots, and one more that belongs to the bottle.
func (s *Store) AddSnapshot(id, ref string) error {
	if err := s.WriteCommittedImage(id, ref); err != nil {
		return err
	}
	refs, err := s.ReadSnapshots(id)
	if err != nil {
		return err
	}
	for _, r := range refs {
		if r == ref {
			return nil
		}
	}
	refs = append(refs, ref)
	return s.writeFile(id, snapshotsFile, []byte(strings.Join(refs, "\n")+"\n"))
}

// ReadSnapshots returns every snapshot reference recorded for the bottle,
// oldest first. A bottle committed before the list existed reports its
// committed image.
func (s *Store) ReadSnapshots(id string) ([]string, error) {
	if err := ValidateIdentity(id); err != nil {
		return nil, err
	}
	data, err := s.readFile(id, snapshotsFile, "snapshot list of "+id, snapshotsLimit)
	if errors.Is(err, errAbsent) {
		img, err := s.ReadCommittedImage(id)
		if err != nil || img == "" {
			return nil, err
		}
		return []string{img}, nil
	}
	if err != nil {
		return nil, err
	}
	var refs []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			refs = append(refs, l)
		}
	}
	if len(refs) > maxSnapshotLines {
		return nil, &stateError{msg: fmt.Sprintf("snapshot list of %s is corrupt: %d entries", id, len(refs)), sentinel: ErrCorrupt}
	}
	return refs, nil
}

// Built is the image source of the bottle's last launch that came up: what
// `revert` goes back to when a later change does not build.
type Built struct {
	// Dockerfile is the per-bottle Dockerfile it built, or "" for none
	// (the agent's own, or the snapshot).
	Dockerfile     string `json:"dockerfile"`
	CommittedImage string `json:"committed_image,omitempty"`
	// ImageUser is the USER of the image that came up, as its backend
	// reported it (sdk.Handle.ImageUser): "" when it could not tell, or
	// the launch was recorded by an earlier core.
	ImageUser string `json:"image_user,omitempty"`
}

// WriteBuilt records the image source of a launch that came up.
func (s *Store) WriteBuilt(id string, b Built) error {
	data, err := json.Marshal(b)
	if err != nil {
		return fmt.Errorf("record last build of %s: %w", id, err)
	}
	return s.writeFile(id, builtFile, append(data, '\n'))
}

// ReadBuilt returns the image source of the last launch that came up, or
// nil when no launch has.
func (s *Store) ReadBuilt(id string) (*Built, error) {
	if err := ValidateIdentity(id); err != nil {
		return nil, err
	}
	data, err := s.readFile(id, builtFile, "last build of "+id, builtLimit)
	if errors.Is(err, errAbsent) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var b Built
	if reason, err := decodeObject(data, &b); reason != "" {
		return nil, &stateError{msg: fmt.Sprintf("last build of %s is corrupt: %s", id, oneLine(reason)), sentinel: ErrCorrupt, cause: err}
	}
	return &b, nil
}

// RemoveDockerfile drops the bottle's own Dockerfile, so that it builds
// from its snapshot or its agent again. Absent is not an error.
func (s *Store) RemoveDockerfile(id string) error {
	return s.removeFile(id, dockerfileFile, "Dockerfile")
}
