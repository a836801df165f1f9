package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// ebsdCall sends a request to one of ebsd's own extension endpoints (/ebsd/v1/…) and
// decodes its JSON answer into out. It returns the raw answer too, for --json output.
func ebsdCall(ctx context.Context, g *globalOptions, method, path string, out any) ([]byte, error) {
	url, err := g.ebsdURL(path)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
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
