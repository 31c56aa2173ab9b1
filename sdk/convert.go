package sdk

import (
	pb "github.com/bot-bottle/bot-bottle/sdk/internal/pluginpb"
)

// The plugin's half of the protobuf conversions: what the core sends,
// decoded, and what the plugin answers, encoded. sdk/host/convert.go is the
// core's half; its round-trip test puts every value through both.

func capsToStrings(cs []Capability) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = string(c)
	}
	return out
}

func agentFromPB(a *pb.Agent) Agent {
	if a == nil {
		return Agent{}
	}
	return Agent{
		Name: a.Name, Description: a.Description, Dockerfile: a.Dockerfile,
		ContextDir: a.ContextDir, Image: a.Image, Command: a.Command,
		ResumeCommand: a.ResumeCommand, Workdir: a.Workdir, EnvNames: a.EnvNames,
		TranscriptPath: a.TranscriptPath, Egress: a.Egress, CapAdd: a.CapAdd, User: a.User,
		Credentials: credentialsFromPB(a.Credentials),
	}
}

func credentialsFromPB(cs []*pb.Credential) []Credential {
	if len(cs) == 0 {
		return nil
	}
	out := make([]Credential, len(cs))
	for i, c := range cs {
		out[i] = Credential{Name: c.Name, EnvName: c.EnvName, Hosts: c.Hosts,
			Header: c.Header, Prefix: c.Prefix, Placeholder: c.Placeholder}
	}
	return out
}

func specFromPB(s *pb.Spec) Spec {
	if s == nil {
		return Spec{}
	}
	return Spec{
		Identity: s.Identity, Agent: agentFromPB(s.Agent), Cwd: s.Cwd, CopyCwd: s.CopyCwd,
		BottleDockerfile: s.BottleDockerfile, CommittedImage: s.CommittedImage,
		QueueDir: s.QueueDir, Env: s.Env, Egress: s.Egress,
		Command: s.Command, TTY: s.Tty, Resume: s.Resume,
		HelperBinary: s.HelperBinary, SnapshotDir: s.SnapshotDir, Detach: s.Detach, EgressLog: s.EgressLog,
		Credentials: s.Credentials,
	}
}

func handleToPB(h Handle) *pb.Handle {
	return &pb.Handle{Version: h.Version, Backend: h.Backend, Identity: h.Identity, Data: h.Data, ImageUser: h.ImageUser}
}

func handleFromPB(h *pb.Handle) Handle {
	if h == nil {
		return Handle{}
	}
	return Handle{Version: h.Version, Backend: h.Backend, Identity: h.Identity, Data: h.Data, ImageUser: h.ImageUser}
}

func sizeFromPB(t *pb.TermSize) TermSize {
	if t == nil {
		return TermSize{}
	}
	return TermSize{Rows: uint16(t.Rows), Cols: uint16(t.Cols)}
}

func bottleToPB(b Bottle) *pb.Bottle {
	out := &pb.Bottle{Identity: b.Identity, Agent: b.Agent, Status: b.Status,
		StartedAt: b.StartedAt, Resources: b.Resources, Image: b.Image, Snapshots: b.Snapshots}
	if b.Handle != nil {
		out.Handle = handleToPB(*b.Handle)
	}
	return out
}
