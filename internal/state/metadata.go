package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// SchemaVersion is the metadata.json schema this package writes. Readers
// accept any version: unknown fields are ignored and missing ones read as
// their zero value (or the documented default).
const SchemaVersion = 1

// DefaultBackend is the backend of metadata written before the field existed.
const DefaultBackend = "docker"

const (
	metadataFile  = "metadata.json"
	metadataLimit = 1 << 20
	// knownLimit caps how many identities an ErrNoBottle message lists.
	knownLimit = 20
)

// Metadata is a bottle's metadata.json.
type Metadata struct {
	SchemaVersion int      `json:"schema_version"`
	Identity      string   `json:"identity"`
	AgentName     string   `json:"agent_name"`
	Cwd           string   `json:"cwd"`        // resolved absolute path or ""
	CopyCwd       bool     `json:"copy_cwd"`   // cwd is copied into the image, not mounted
	StartedAt     string   `json:"started_at"` // RFC 3339
	Backend       string   `json:"backend"`    // "" in old files reads as "docker"
	Egress        []string `json:"egress,omitempty"`
	// TTY: the agent runs on a terminal (the last launch asked for one).
	// Attach puts the operator's terminal in raw mode only for such a bottle.
	TTY bool `json:"tty,omitempty"`
	// Review is set for a bottle started with --review: it works on its own
	// clone (ReviewDir) of this repository, on the branch
	// bot-bottle/<identity>.
	Review *Review `json:"review,omitempty"`
	// QueueSync: the bottle's backend keeps its queue apart from the host's
	// (sdk.CapQueueSync), so the core syncs it before reading the queue; set
	// at each launch, so that a home of other backends starts no plugin for it.
	QueueSync bool `json:"queue_sync,omitempty"`
}

// Review is a --review bottle's repository and where its branch started.
type Review struct {
	Repo string `json:"repo"` // the operator's repository, top level
	Base string `json:"base"` // the commit the branch started from
}

// WriteMetadata atomically writes m as the metadata of bottle m.Identity,
// creating its state directory if needed. It stamps the current
// SchemaVersion, records an empty Backend as "docker" and an empty StartedAt
// as now; a relative Cwd or a StartedAt that is not RFC 3339 is refused.
func (s *Store) WriteMetadata(m Metadata) error {
	if err := ValidateIdentity(m.Identity); err != nil {
		return err
	}
	if m.Cwd != "" && !filepath.IsAbs(m.Cwd) {
		return fmt.Errorf("write metadata for %s: cwd %q is not an absolute path", m.Identity, m.Cwd)
	}
	if m.StartedAt == "" {
		m.StartedAt = time.Now().UTC().Format(time.RFC3339)
	} else if _, err := time.Parse(time.RFC3339, m.StartedAt); err != nil {
		return fmt.Errorf("write metadata for %s: started_at %q is not RFC 3339", m.Identity, m.StartedAt)
	}
	if r := m.Review; r != nil && (!filepath.IsAbs(r.Repo) || r.Base == "" || strings.Trim(r.Base, "0123456789abcdef") != "") {
		return fmt.Errorf("write metadata for %s: review of %q at %q is not an absolute path and a commit", m.Identity, r.Repo, r.Base)
	}
	m.SchemaVersion = SchemaVersion
	if m.Backend == "" {
		m.Backend = DefaultBackend
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("write metadata for %s: %w", m.Identity, err)
	}
	return s.writeFile(m.Identity, metadataFile, append(data, '\n'))
}

// ReadMetadata reads bottle id's metadata. Unknown fields are ignored,
// missing ones are zero, an empty backend reads as "docker" and an empty
// identity as id. No state directory or no metadata.json is ErrNoBottle with
// a message naming the bottles that do exist; unparsable JSON, a symlink, or
// metadata that names another identity is ErrCorrupt with a one-line message
// naming the file. Reading never changes anything on disk.
func (s *Store) ReadMetadata(id string) (Metadata, error) {
	if err := ValidateIdentity(id); err != nil {
		return Metadata{}, err
	}
	m, err := s.readMetadata(id)
	if errors.Is(err, errAbsent) {
		return Metadata{}, s.noBottle(id)
	}
	return m, err
}

func (s *Store) readMetadata(id string) (Metadata, error) {
	what := "metadata for " + id
	data, err := s.readFile(id, metadataFile, what, metadataLimit)
	if err != nil {
		return Metadata{}, err
	}
	path := filepath.Join(s.Dir(id), metadataFile)
	corrupt := func(reason string, cause error) error {
		return &stateError{
			msg:      fmt.Sprintf("%s is corrupt (%s): %s", what, path, oneLine(reason)),
			sentinel: ErrCorrupt,
			cause:    cause,
		}
	}
	var m Metadata
	if reason, err := decodeObject(data, &m); reason != "" {
		return Metadata{}, corrupt(reason, err)
	}
	switch m.Identity {
	case "":
		m.Identity = id
	case id:
	default:
		return Metadata{}, corrupt(fmt.Sprintf("it names identity %q", m.Identity), nil)
	}
	if m.Backend == "" {
		m.Backend = DefaultBackend
	}
	return m, nil
}

// decodeObject unmarshals data, which must be one JSON object, into v. On
// failure it returns why (and the JSON error, if there is one).
func decodeObject(data []byte, v any) (reason string, err error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return "empty file", nil
	}
	if trimmed[0] != '{' {
		return "not a JSON object", nil
	}
	if err := json.Unmarshal(trimmed, v); err != nil {
		return err.Error(), err
	}
	return "", nil
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// noBottle builds the ErrNoBottle error for id, listing the bottles that do
// have metadata so the user can see what they may have meant.
func (s *Store) noBottle(id string) error {
	var known []string
	ids, err := s.Identities()
	if err == nil {
		for _, k := range ids {
			if k == id {
				continue
			}
			if fi, err := os.Lstat(filepath.Join(s.Dir(k), metadataFile)); err == nil && fi.Mode().IsRegular() {
				known = append(known, k)
			}
		}
	}
	msg := fmt.Sprintf("no bottle %q; ", id)
	switch {
	case len(known) == 0:
		msg += "no bottles yet"
	case len(known) > knownLimit:
		msg += "known: " + strings.Join(known[:knownLimit], ", ") + fmt.Sprintf(" (and %d more)", len(known)-knownLimit)
	default:
		msg += "known: " + strings.Join(known, ", ")
	}
	return &stateError{msg: msg, sentinel: ErrNoBottle}
}

// Identities returns, sorted, the names of the directories under home/state
// that are valid identities. Files, symlinks and invalid names are ignored.
func (s *Store) Identities() ([]string, error) {
	entries, err := os.ReadDir(s.stateDir())
	if err != nil {
		return nil, fmt.Errorf("list bottles in %s: %w", s.stateDir(), err)
	}
	var ids []string
	for _, e := range entries {
		if e.IsDir() && sdk.ValidIdentity(e.Name()) {
			ids = append(ids, e.Name())
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// Broken is a bottle directory whose metadata could not be read.
type Broken struct {
	Identity string
	// Err wraps ErrCorrupt (unreadable metadata) or ErrNoBottle (no
	// metadata.json yet: possibly a bottle another process is minting right
	// now, so take its Lock before cleaning it up).
	Err error
}

// List returns the metadata of every bottle whose metadata can be read,
// sorted by identity. Bottles with corrupt or missing metadata are left out;
// Scan reports them.
func (s *Store) List() ([]Metadata, error) {
	ok, _, err := s.Scan()
	return ok, err
}

// Scan reads every bottle's metadata, sorted by identity: the readable ones,
// and separately those whose metadata is corrupt or missing.
func (s *Store) Scan() ([]Metadata, []Broken, error) {
	ids, err := s.Identities()
	if err != nil {
		return nil, nil, err
	}
	var ok []Metadata
	var broken []Broken
	for _, id := range ids {
		m, err := s.readMetadata(id)
		switch {
		case err == nil:
			ok = append(ok, m)
		case errors.Is(err, errAbsent):
			broken = append(broken, Broken{Identity: id, Err: &stateError{
				msg:      fmt.Sprintf("bottle %q has no metadata", id),
				sentinel: ErrNoBottle,
			}})
		default:
			broken = append(broken, Broken{Identity: id, Err: err})
		}
	}
	return ok, broken, nil
}
