// The code generators of `make proto`, pinned. Their versions are recorded in
// the header of the generated files, so a change here is a change of the
// committed code: regenerate with `make proto` and commit both.
module github.com/bot-bottle/bot-bottle/sdk/internal/pluginpb/tools

go 1.26

tool (
	google.golang.org/grpc/cmd/protoc-gen-go-grpc
	google.golang.org/protobuf/cmd/protoc-gen-go
)

require (
	google.golang.org/grpc/cmd/protoc-gen-go-grpc v1.5.1 // indirect
	google.golang.org/protobuf v1.36.11 // indirect
)
