// The Pulumi Kubernetes provider as a plugin binary (pulumi-resource-kubernetes), for the test
// workspace image. Upstream's own main package embeds a copy of its schema with the release's
// version written in, which upstream's Makefile generates and its module does not ship; this
// one embeds the schema as the module ships it (tests/tools/build.sh copies schema.json and
// terraform-mapping.json here before building; they are not committed) and writes the version
// in as it starts.
package main

import (
	_ "embed"
	"encoding/json"
	"log"

	"github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/provider"
	"github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version"
)

//go:embed schema.json
var schema []byte

//go:embed terraform-mapping.json
var terraformMapping []byte

func main() {
	// Raw values: everything but the version stays as shipped.
	var spec map[string]json.RawMessage
	if err := json.Unmarshal(schema, &spec); err != nil {
		log.Fatalf("the embedded schema: %v", err)
	}
	v, err := json.Marshal(version.Version)
	if err != nil {
		log.Fatalf("the version: %v", err)
	}
	spec["version"] = v
	versioned, err := json.Marshal(spec)
	if err != nil {
		log.Fatalf("the versioned schema: %v", err)
	}
	provider.Serve("kubernetes", version.Version, versioned, terraformMapping)
}
