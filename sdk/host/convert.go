package host

import (
	"github.com/bot-bottle/bot-bottle/sdk"
	pb "github.com/bot-bottle/bot-bottle/sdk/internal/pluginpb"
)

// The core's half of the protobuf conversions: what it sends, encoded, and
// what it receives, decoded. sdk/convert.go is the plugin's half; the
// round-trip test (convert_test.go) puts every value through both.

func capsFromStrings(ss []string) []sdk.Capability {
	out := make([]sdk.Capability, len(ss))
	for i, s := range ss {
		out[i] = sdk.Capability(s)
	}
	return out
}

func agentToPB(a sdk.Agent) *pb.Agent {
	return &pb.Agent{
		Name: a.Name, Description: a.Description, Dockerfile: a.Dockerfile,
		ContextDir: a.ContextDir, Image: a.Image, Command: a.Command,
		ResumeCommand: a.ResumeCommand, Workdir: a.Workdir, EnvNames: a.EnvNames,
		TranscriptPath: a.TranscriptPath, Egress: a.Egress, CapAdd: a.CapAdd, User: a.User,
		Credentials: credentialsToPB(a.Credentials),
	}
}

func credentialsToPB(cs []sdk.Credential) []*pb.Credential {
	if len(cs) == 0 {
		return nil
	}
	out := make([]*pb.Credential, len(cs))
	for i, c := range cs {
		out[i] = &pb.Credential{Name: c.Name, EnvName: c.EnvName, Hosts: c.Hosts,
			Header: c.Header, Prefix: c.Prefix, Placeholder: c.Placeholder}
	}
	return out
}

func specToPB(s sdk.Spec) *pb.Spec {
	return &pb.Spec{
		Identity: s.Identity, Agent: agentToPB(s.Agent), Cwd: s.Cwd, CopyCwd: s.CopyCwd,
		BottleDockerfile: s.BottleDockerfile, CommittedImage: s.CommittedImage,
		QueueDir: s.QueueDir, Env: s.Env, Egress: s.Egress,
		Command: s.Command, Tty: s.TTY, Resume: s.Resume,
		HelperBinary: s.HelperBinary, SnapshotDir: s.SnapshotDir, Detach: s.Detach, EgressLog: s.EgressLog,
		Credentials: s.Credentials,
	}
}

func handleToPB(h sdk.Handle) *pb.Handle {
	return &pb.Handle{Version: h.Version, Backend: h.Backend, Identity: h.Identity, Data: h.Data, ImageUser: h.ImageUser}
}

func handleFromPB(h *pb.Handle) sdk.Handle {
	if h == nil {
		return sdk.Handle{}
	}
	return sdk.Handle{Version: h.Version, Backend: h.Backend, Identity: h.Identity, Data: h.Data, ImageUser: h.ImageUser}
}

func sizeToPB(t sdk.TermSize) *pb.TermSize {
	return &pb.TermSize{Rows: uint32(t.Rows), Cols: uint32(t.Cols)}
}

func bottleFromPB(b *pb.Bottle) sdk.Bottle {
	out := sdk.Bottle{Identity: b.Identity, Agent: b.Agent, Status: b.Status,
		StartedAt: b.StartedAt, Resources: b.Resources, Image: b.Image, Snapshots: b.Snapshots}
	if b.Handle != nil {
		h := handleFromPB(b.Handle)
		out.Handle = &h
	}
	return out
}
