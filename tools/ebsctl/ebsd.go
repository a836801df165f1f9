package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
)

// emptyPayloadHash is the hex SHA-256 of an empty body, which every extension call has.
const emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// ebsdCall sends a request to one of ebsd's own extension endpoints (/ebsd/v1/…) and
// decodes its JSON answer into out. It returns the raw answer too, for --json output.
// The request is signed like an EBS one (ebsd scopes its extensions to "ebs") and goes
// through the SDK's HTTP client, so a CA bundle (--ca-bundle, AWS_CA_BUNDLE) applies to it as well.
func ebsdCall(ctx context.Context, g *globalOptions, method, path string, out any) ([]byte, error) {
	url, err := g.ebsdURL(path)
	if err != nil {
		return nil, err
	}
	cfg, err := g.awsConfig(ctx)
	if err != nil {
		return nil, err
	}
	creds, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w\n(details: %w)", errNoCredentials, err)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Amz-Content-Sha256", emptyPayloadHash)
	if err := v4.NewSigner().SignHTTP(ctx, creds, req, emptyPayloadHash, "ebs", cfg.Region, time.Now()); err != nil {
		return nil, fmt.Errorf("signing %s %s: %w", method, path, err)
	}
	// The configuration carries an HTTP client only when it had to build one (a CA
	// bundle); the SDK's clients fall back to its default, and so does this call.
	var client aws.HTTPClient = awshttp.NewBuildableClient()
	if cfg.HTTPClient != nil {
		client = cfg.HTTPClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("asking %s: %w", g.endpoint, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading the answer to %s %s: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return nil, fmt.Errorf("decoding the answer to %s %s: %w", method, path, err)
	}
	return body, nil
}
