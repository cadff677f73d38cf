// pulumi-resource-gate: a provider for tests (ours, built beside the Pulumi CLI from the same
// module graph). Its one resource, gate:index:Resource, waits at a named pipe (`pipe`), or
// for `sleep` seconds, while it is created or updated, and holds a string (`value`). A test that kills `pulumi up` while
// the provider waits there leaves what a killed or evicted workspace pod leaves in real life:
// an operation the engine recorded as pending in the stack's state.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/signal"
	"time"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
)

const version = "0.1.0"

// What the YAML language host reads to type-check a program's resources.
const schema = `{
  "name": "gate",
  "version": "` + version + `",
  "resources": {
    "gate:index:Resource": {
      "inputProperties": {"pipe": {"type": "string"}, "sleep": {"type": "number"}, "value": {"type": "string"}},
      "properties": {"pipe": {"type": "string"}, "sleep": {"type": "number"}, "value": {"type": "string"}}
    }
  }
}`

type gate struct {
	pulumirpc.UnimplementedResourceProviderServer
}

// The plugin protocol: serve on a loopback port and print it; the engine's SIGINT ends it.
func main() {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv := grpc.NewServer()
	pulumirpc.RegisterResourceProviderServer(srv, &gate{})
	interrupt := make(chan os.Signal, 1)
	signal.Notify(interrupt, os.Interrupt)
	go func() {
		<-interrupt
		srv.Stop()
	}()
	fmt.Printf("%d\n", lis.Addr().(*net.TCPAddr).Port)
	if err := srv.Serve(lis); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// wait sleeps for the resource's `sleep` seconds, then blocks until a writer opens the pipe
// named by its `pipe` (when it has one) and reads what it writes.
func wait(props *structpb.Struct) error {
	time.Sleep(time.Duration(props.GetFields()["sleep"].GetNumberValue() * float64(time.Second)))
	pipe := props.GetFields()["pipe"].GetStringValue()
	if pipe == "" {
		return nil
	}
	if _, err := os.ReadFile(pipe); err != nil {
		return fmt.Errorf("gate %s: %w", pipe, err)
	}
	return nil
}

func (g *gate) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version}, nil
}

func (g *gate) GetSchema(context.Context, *pulumirpc.GetSchemaRequest) (*pulumirpc.GetSchemaResponse, error) {
	return &pulumirpc.GetSchemaResponse{Schema: schema}, nil
}

func (g *gate) CheckConfig(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	return &pulumirpc.CheckResponse{Inputs: req.GetNews()}, nil
}

func (g *gate) DiffConfig(context.Context, *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	return &pulumirpc.DiffResponse{}, nil
}

func (g *gate) Configure(context.Context, *pulumirpc.ConfigureRequest) (*pulumirpc.ConfigureResponse, error) {
	return &pulumirpc.ConfigureResponse{AcceptSecrets: true, SupportsPreview: true}, nil
}

func (g *gate) Check(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	return &pulumirpc.CheckResponse{Inputs: req.GetNews()}, nil
}

func (g *gate) Diff(_ context.Context, req *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	olds, news := req.GetOldInputs().GetFields(), req.GetNews().GetFields()
	var diffs []string
	for _, k := range []string{"pipe", "sleep", "value"} {
		if !proto.Equal(olds[k], news[k]) {
			diffs = append(diffs, k)
		}
	}
	changes := pulumirpc.DiffResponse_DIFF_NONE
	if len(diffs) > 0 {
		changes = pulumirpc.DiffResponse_DIFF_SOME
	}
	return &pulumirpc.DiffResponse{Changes: changes, Diffs: diffs}, nil
}

func (g *gate) Create(_ context.Context, req *pulumirpc.CreateRequest) (*pulumirpc.CreateResponse, error) {
	if req.GetPreview() {
		return &pulumirpc.CreateResponse{Properties: req.GetProperties()}, nil
	}
	if err := wait(req.GetProperties()); err != nil {
		return nil, err
	}
	id := make([]byte, 8)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	return &pulumirpc.CreateResponse{Id: hex.EncodeToString(id), Properties: req.GetProperties()}, nil
}

func (g *gate) Read(_ context.Context, req *pulumirpc.ReadRequest) (*pulumirpc.ReadResponse, error) {
	return &pulumirpc.ReadResponse{Id: req.GetId(), Properties: req.GetProperties(), Inputs: req.GetInputs()}, nil
}

func (g *gate) Update(_ context.Context, req *pulumirpc.UpdateRequest) (*pulumirpc.UpdateResponse, error) {
	if req.GetPreview() {
		return &pulumirpc.UpdateResponse{Properties: req.GetNews()}, nil
	}
	if err := wait(req.GetNews()); err != nil {
		return nil, err
	}
	return &pulumirpc.UpdateResponse{Properties: req.GetNews()}, nil
}

func (g *gate) Delete(context.Context, *pulumirpc.DeleteRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

func (g *gate) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}
