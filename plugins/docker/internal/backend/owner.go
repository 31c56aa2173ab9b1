package backend

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/docker/docker/client"
)

// owner is a numeric uid:gid inside a container.
type owner struct{ uid, gid int }

// containerOwner resolves user (a container's configured USER: "", a name, a
// uid, name:group or uid:gid) to numbers using the container's own
// /etc/passwd and /etc/group. The engine's CopyUIDGID option cannot be used
// for this: older engines look names up on the host.
func containerOwner(ctx context.Context, c *client.Client, id, user string) (owner, error) {
	if user == "" {
		return owner{}, nil
	}
	name, group, hasGroup := strings.Cut(user, ":")
	var o owner
	uid, err := strconv.Atoi(name)
	if err == nil {
		o.uid, o.gid = uid, uid
		if !hasGroup {
			// A bare uid takes its primary group from passwd when listed.
			if entries, err := readEtc(ctx, c, id, "/etc/passwd"); err == nil {
				for _, f := range entries {
					if len(f) > 3 && f[2] == name {
						if g, err := strconv.Atoi(f[3]); err == nil {
							o.gid = g
						}
						break
					}
				}
			}
		}
	} else {
		entries, err := readEtc(ctx, c, id, "/etc/passwd")
		if err != nil {
			return o, fmt.Errorf("resolve user %q: %w", name, err)
		}
		found := false
		for _, f := range entries {
			if len(f) > 3 && f[0] == name {
				u, err1 := strconv.Atoi(f[2])
				g, err2 := strconv.Atoi(f[3])
				if err1 != nil || err2 != nil {
					return o, fmt.Errorf("resolve user %q: malformed /etc/passwd entry", name)
				}
				o.uid, o.gid, found = u, g, true
				break
			}
		}
		if !found {
			return o, fmt.Errorf("resolve user %q: not in the container's /etc/passwd", name)
		}
	}
	if hasGroup {
		if g, err := strconv.Atoi(group); err == nil {
			o.gid = g
		} else {
			entries, err := readEtc(ctx, c, id, "/etc/group")
			if err != nil {
				return o, fmt.Errorf("resolve group %q: %w", group, err)
			}
			found := false
			for _, f := range entries {
				if len(f) > 2 && f[0] == group {
					if o.gid, err = strconv.Atoi(f[2]); err != nil {
						return o, fmt.Errorf("resolve group %q: malformed /etc/group entry", group)
					}
					found = true
					break
				}
			}
			if !found {
				return o, fmt.Errorf("resolve group %q: not in the container's /etc/group", group)
			}
		}
	}
	return o, nil
}

// readEtc reads a colon-separated file such as /etc/passwd out of a
// container (created or running) into its fields.
func readEtc(ctx context.Context, c *client.Client, id, path string) ([][]string, error) {
	text, err := readFileFrom(ctx, c, id, path)
	if err != nil {
		return nil, err
	}
	var out [][]string
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, strings.Split(line, ":"))
	}
	return out, nil
}

// chownTar rewrites every entry of a tar archive to belong to o.
func chownTar(archive []byte, o owner) ([]byte, error) {
	var buf bytes.Buffer
	tr := tar.NewReader(bytes.NewReader(archive))
	tw := tar.NewWriter(&buf)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read archive: %w", err)
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = o.uid, o.gid, "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("rewrite archive: %w", err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return nil, fmt.Errorf("rewrite archive: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
