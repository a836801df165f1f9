package api

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

func TestStartSnapshotRefusesInvalidRequests(t *testing.T) {
	a := newTestAPI(t)
	pending := a.start(`{"VolumeSize":1}`)
	tags := func(n int) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = `{"Key":"k` + strconv.Itoa(i) + `","Value":"v"}`
		}
		return `[` + strings.Join(parts, ",") + `]`
	}
	before := len(a.store.snaps)
	for _, tc := range []struct {
		name, body, reason string
	}{
		{"no VolumeSize", `{"Description":"x"}`, "INVALID_PARAMETER_VALUE"},
		{"broken JSON", `{"VolumeSize":`, "INVALID_PARAMETER_VALUE"},
		{"VolumeSize a string", `{"VolumeSize":"1"}`, "INVALID_PARAMETER_VALUE"},
		{"volume 0", `{"VolumeSize":0}`, "INVALID_VOLUME_SIZE"},
		{"volume 65537", `{"VolumeSize":65537}`, "INVALID_VOLUME_SIZE"},
		{"parent malformed", `{"VolumeSize":1,"ParentSnapshotId":"vol-1"}`, "INVALID_SNAPSHOT_ID"},
		{"parent pending", `{"VolumeSize":1,"ParentSnapshotId":"` + pending + `"}`, "INVALID_SNAPSHOT_ID"},
		{"51 tags", `{"VolumeSize":1,"Tags":` + tags(51) + `}`, "INVALID_TAG"},
		{"tag without key", `{"VolumeSize":1,"Tags":[{"Value":"v"}]}`, "INVALID_TAG"},
		{"duplicate tag", `{"VolumeSize":1,"Tags":[{"Key":"a"},{"Key":"a"}]}`, "INVALID_TAG"},
		{"aws: tag", `{"VolumeSize":1,"Tags":[{"Key":"AWS:x"}]}`, "INVALID_TAG"},
		{"timeout 9", `{"VolumeSize":1,"Timeout":9}`, "INVALID_PARAMETER_VALUE"},
		{"timeout 4321", `{"VolumeSize":1,"Timeout":4321}`, "INVALID_PARAMETER_VALUE"},
		{"token 65 chars", `{"VolumeSize":1,"ClientToken":"` + strings.Repeat("t", 65) + `"}`, "INVALID_PARAMETER_VALUE"},
		{"token not ASCII", `{"VolumeSize":1,"ClientToken":"tökén"}`, "INVALID_PARAMETER_VALUE"},
		{"encrypted", `{"VolumeSize":1,"Encrypted":true}`, "INVALID_PARAMETER_VALUE"},
		{"kms key", `{"VolumeSize":1,"KmsKeyArn":"arn:aws:kms:us-east-1:111122223333:key/x"}`, "INVALID_PARAMETER_VALUE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantEBSError(t, a.do("POST", "/snapshots", nil, []byte(tc.body)), 400, "ValidationException", tc.reason)
		})
	}
	if n := len(a.store.snaps); n != before {
		t.Fatalf("%d snapshots after refused starts, want %d", n, before)
	}
	// The store's own refusals come back as AWS errors too.
	big := a.start(`{"VolumeSize":2}`)
	a.complete(big, "0")
	wantEBSError(t, a.do("POST", "/snapshots", nil, []byte(`{"VolumeSize":1,"ParentSnapshotId":"`+big+`"}`)), 400, "ValidationException", "INVALID_VOLUME_SIZE")
	wantEBSError(t, a.do("POST", "/snapshots", nil, []byte(`{"VolumeSize":1,"ParentSnapshotId":"snap-0123456789abcdef0"}`)), 404, "ResourceNotFoundException", "SNAPSHOT_NOT_FOUND")
}

// Limits count characters, as AWS does, not UTF-8 bytes: 255 emoji (1020 bytes) are a
// valid description, 256 are not; likewise tag keys (127) and values (255).
func TestStartSnapshotCountsCharactersNotBytes(t *testing.T) {
	a := newTestAPI(t)
	const emoji = "😀"
	desc := strings.Repeat(emoji, 255)
	key, value := strings.Repeat(emoji, 127), strings.Repeat(emoji, 255)
	id := a.start(`{"VolumeSize":1,"Description":` + jsonString(desc) + `,"Tags":[{"Key":` + jsonString(key) + `,"Value":` + jsonString(value) + `}]}`)
	got := a.store.snaps[id].snap
	if got.Description != desc || len(got.Tags) != 1 || got.Tags[0].Key != key || got.Tags[0].Value != value {
		t.Fatalf("stored %q %q: not what was sent", got.Description, got.Tags)
	}
	for _, tc := range []struct{ name, body, reason string }{
		{"description 256", `{"VolumeSize":1,"Description":` + jsonString(desc+"x") + `}`, "INVALID_PARAMETER_VALUE"},
		{"tag key 128", `{"VolumeSize":1,"Tags":[{"Key":` + jsonString(key+"x") + `}]}`, "INVALID_TAG"},
		{"tag value 256", `{"VolumeSize":1,"Tags":[{"Key":"k","Value":` + jsonString(value+"x") + `}]}`, "INVALID_TAG"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantEBSError(t, a.do("POST", "/snapshots", nil, []byte(tc.body)), 400, "ValidationException", tc.reason)
		})
	}
}

// Text that is not Unicode is refused, where encoding/json would have stored U+FFFD.
func TestStartSnapshotRefusesInvalidUTF8(t *testing.T) {
	a := newTestAPI(t)
	for name, body := range map[string]string{
		"raw byte in description": "{\"VolumeSize\":1,\"Description\":\"caf\xe9\"}",
		"raw byte in tag key":     "{\"VolumeSize\":1,\"Tags\":[{\"Key\":\"\xff\"}]}",
		"raw byte in tag value":   "{\"VolumeSize\":1,\"Tags\":[{\"Key\":\"k\",\"Value\":\"\xc3\"}]}",
		"lone high surrogate":     `{"VolumeSize":1,"Description":"a\ud83d"}`,
		"lone low surrogate":      `{"VolumeSize":1,"Description":"\ude00b"}`,
		"reversed pair":           `{"VolumeSize":1,"Description":"\ude00\ud83d"}`,
		"high then other escape":  `{"VolumeSize":1,"Description":"\ud83d\n"}`,
	} {
		t.Run(name, func(t *testing.T) {
			wantEBSError(t, a.do("POST", "/snapshots", nil, []byte(body)), 400, "ValidationException", "INVALID_PARAMETER_VALUE")
		})
	}
	if len(a.store.starts) != 0 {
		t.Fatalf("refused requests reached the store: %+v", a.store.starts)
	}
	// A surrogate pair is one character, an escaped backslash before "u" is no escape.
	id := a.start(`{"VolumeSize":1,"Description":"\ud83d\ude00 \\ud800"}`)
	if got := a.store.snaps[id].snap.Description; got != `😀 \ud800` {
		t.Fatalf("description %q", got)
	}
}

func TestPutSnapshotBlockRefusesInvalidRequests(t *testing.T) {
	a := newTestAPI(t)
	id := a.start(`{"VolumeSize":1}`)
	data := blockOf(7)
	path := "/snapshots/" + id + "/blocks/3"
	with := func(k, v string) map[string]string {
		h := putHeaders(data)
		if v == "" {
			delete(h, k)
		} else {
			h[k] = v
		}
		return h
	}
	for _, tc := range []struct {
		name   string
		path   string
		header map[string]string
		body   []byte
		reason string
	}{
		{"malformed snapshot id", "/snapshots/snap-XYZ/blocks/3", putHeaders(data), data, "INVALID_SNAPSHOT_ID"},
		{"no data length", path, with("x-amz-Data-Length", ""), data, "INVALID_PARAMETER_VALUE"},
		{"data length 4096", path, with("x-amz-Data-Length", "4096"), data, "INVALID_BLOCK"},
		{"data length +524288", path, with("x-amz-Data-Length", "+524288"), data, "INVALID_BLOCK"},
		{"no checksum", path, with("x-amz-Checksum", ""), data, "INVALID_PARAMETER_VALUE"},
		{"checksum not base64", path, with("x-amz-Checksum", "not*base64"), data, "INVALID_PARAMETER_VALUE"},
		{"checksum mismatch", path, with("x-amz-Checksum", checksumOf(blockOf(8))), data, "INVALID_PARAMETER_VALUE"},
		{"no algorithm", path, with("x-amz-Checksum-Algorithm", ""), data, "INVALID_PARAMETER_VALUE"},
		{"algorithm MD5", path, with("x-amz-Checksum-Algorithm", "MD5"), data, "INVALID_PARAMETER_VALUE"},
		{"progress 101", path, with("x-amz-Progress", "101"), data, "INVALID_PARAMETER_VALUE"},
		{"progress +5", path, with("x-amz-Progress", "+5"), data, "INVALID_PARAMETER_VALUE"},
		{"progress -0", path, with("x-amz-Progress", "-0"), data, "INVALID_PARAMETER_VALUE"},
		{"progress 05", path, with("x-amz-Progress", "05"), data, "INVALID_PARAMETER_VALUE"},
		{"content encoding", path, with("Content-Encoding", "gzip"), data, "INVALID_CONTENT_ENCODING"},
		{"short body", path, putHeaders(data), data[:1000], "INVALID_PARAMETER_VALUE"},
		{"long body", path, putHeaders(data), append(blockOf(7), 'x'), "INVALID_PARAMETER_VALUE"},
		{"index past volume", "/snapshots/" + id + "/blocks/2048", putHeaders(data), data, "INVALID_BLOCK"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantEBSError(t, a.do("PUT", tc.path, tc.header, tc.body), 400, "ValidationException", tc.reason)
		})
	}
	if n := len(a.store.snaps[id].blocks); n != 0 {
		t.Fatalf("%d blocks stored by refused puts", n)
	}
	wantEBSError(t, a.do("PUT", "/snapshots/snap-0123456789abcdef0/blocks/3", putHeaders(data), data), 404, "ResourceNotFoundException", "SNAPSHOT_NOT_FOUND")

	rec := a.do("PUT", path, with("x-amz-Progress", "100"), data)
	if rec.Code != http.StatusCreated || rec.Header()["x-amz-Checksum"][0] != checksumOf(data) || rec.Body.String() != "{}" {
		t.Fatalf("valid put: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
}

// A block index is decimal digits, nothing else: strconv.ParseInt alone took "+5" as
// block 5.
func TestBlockIndexIsDecimalDigitsOnly(t *testing.T) {
	a := newTestAPI(t)
	id := a.start(`{"VolumeSize":1}`)
	data := blockOf(7)
	bad := []string{"%2B5", "+5", "-1", "-0", "%205", "5%20", "05", "00", "0x5", "5.0", "1e3", "%EF%BC%95" /* fullwidth 5 */, "99999999999999999999"}
	for _, index := range bad {
		t.Run("put "+index, func(t *testing.T) {
			wantEBSError(t, a.do("PUT", "/snapshots/"+id+"/blocks/"+index, putHeaders(data), data), 400, "ValidationException", "INVALID_BLOCK")
		})
	}
	if a.store.puts != 0 {
		t.Fatalf("%d puts reached the store", a.store.puts)
	}
	a.put(id, "0", data)
	a.put(id, "5", data)
	a.complete(id, "2")
	tok := firstBlockToken(t, a, id)
	for _, index := range append(bad, "%2B0", "+0") {
		t.Run("get "+index, func(t *testing.T) {
			wantEBSError(t, a.do("GET", "/snapshots/"+id+"/blocks/"+index+"?blockToken="+formValue(tok), nil, nil), 400, "ValidationException", "INVALID_BLOCK")
		})
	}
}

func TestCompleteSnapshotRefusesInvalidRequests(t *testing.T) {
	a := newTestAPI(t)
	id := a.start(`{"VolumeSize":1}`)
	a.put(id, "4", blockOf(4))
	sum := linearOf(blockOf(4))
	path := "/snapshots/completion/" + id
	for _, tc := range []struct {
		name    string
		headers map[string]string
	}{
		{"no count", map[string]string{}},
		{"negative count", map[string]string{"x-amz-ChangedBlocksCount": "-1"}},
		{"count +1", map[string]string{"x-amz-ChangedBlocksCount": "+1"}},
		{"count 01", map[string]string{"x-amz-ChangedBlocksCount": "01"}},
		{"count not a number", map[string]string{"x-amz-ChangedBlocksCount": "one"}},
		{"count with space", map[string]string{"x-amz-ChangedBlocksCount": "1 1"}},
		{"checksum without algorithm", map[string]string{"x-amz-ChangedBlocksCount": "1", "x-amz-Checksum": sum, "x-amz-Checksum-Aggregation-Method": "LINEAR"}},
		{"algorithm without checksum", map[string]string{"x-amz-ChangedBlocksCount": "1", "x-amz-Checksum-Algorithm": "SHA256"}},
		{"algorithm MD5", map[string]string{"x-amz-ChangedBlocksCount": "1", "x-amz-Checksum": sum, "x-amz-Checksum-Algorithm": "MD5", "x-amz-Checksum-Aggregation-Method": "LINEAR"}},
		{"method TREE", map[string]string{"x-amz-ChangedBlocksCount": "1", "x-amz-Checksum": sum, "x-amz-Checksum-Algorithm": "SHA256", "x-amz-Checksum-Aggregation-Method": "TREE"}},
		{"checksum not base64", map[string]string{"x-amz-ChangedBlocksCount": "1", "x-amz-Checksum": "x", "x-amz-Checksum-Algorithm": "SHA256", "x-amz-Checksum-Aggregation-Method": "LINEAR"}},
		{"count mismatch", map[string]string{"x-amz-ChangedBlocksCount": "2"}},
		{"aggregate mismatch", map[string]string{"x-amz-ChangedBlocksCount": "1", "x-amz-Checksum": linearOf(blockOf(5)), "x-amz-Checksum-Algorithm": "SHA256", "x-amz-Checksum-Aggregation-Method": "LINEAR"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantEBSError(t, a.do("POST", path, tc.headers, nil), 400, "ValidationException", "INVALID_PARAMETER_VALUE")
		})
	}
	if st := a.store.snaps[id].snap.Status; st != "pending" {
		t.Fatalf("status after refused completions: %s", st)
	}
	wantEBSError(t, a.do("POST", "/snapshots/completion/snap-XYZ", map[string]string{"x-amz-ChangedBlocksCount": "0"}, nil), 400, "ValidationException", "INVALID_SNAPSHOT_ID")
	wantEBSError(t, a.do("POST", "/snapshots/completion/snap-0123456789abcdef0", map[string]string{"x-amz-ChangedBlocksCount": "0"}, nil), 404, "ResourceNotFoundException", "SNAPSHOT_NOT_FOUND")
	rec := a.do("POST", path, map[string]string{"x-amz-ChangedBlocksCount": "1", "x-amz-Checksum": sum, "x-amz-Checksum-Algorithm": "SHA256", "x-amz-Checksum-Aggregation-Method": "LINEAR"}, nil)
	if rec.Code != http.StatusAccepted || rec.Body.String() != `{"Status":"completed"}` {
		t.Fatalf("valid completion: %d %s", rec.Code, rec.Body)
	}
}

func TestListSnapshotBlocksRefusesInvalidRequests(t *testing.T) {
	a := newTestAPI(t)
	id := a.completed()
	pending := a.start(`{"VolumeSize":1}`)
	for _, tc := range []struct{ name, target, reason string }{
		{"malformed id", "/snapshots/snap-XYZ/blocks", "INVALID_SNAPSHOT_ID"},
		{"pending", "/snapshots/" + pending + "/blocks", "INVALID_SNAPSHOT_ID"},
		{"maxResults 10001", "/snapshots/" + id + "/blocks?maxResults=10001", "INVALID_PARAMETER_VALUE"},
		{"maxResults -1", "/snapshots/" + id + "/blocks?maxResults=-1", "INVALID_PARAMETER_VALUE"},
		{"maxResults +100", "/snapshots/" + id + "/blocks?maxResults=%2B100", "INVALID_PARAMETER_VALUE"},
		{"maxResults abc", "/snapshots/" + id + "/blocks?maxResults=abc", "INVALID_PARAMETER_VALUE"},
		{"startingBlockIndex -1", "/snapshots/" + id + "/blocks?startingBlockIndex=-1", "INVALID_PARAMETER_VALUE"},
		{"startingBlockIndex +1", "/snapshots/" + id + "/blocks?startingBlockIndex=%2B1", "INVALID_PARAMETER_VALUE"},
		{"startingBlockIndex 1.0", "/snapshots/" + id + "/blocks?startingBlockIndex=1.0", "INVALID_PARAMETER_VALUE"},
		{"page token garbage", "/snapshots/" + id + "/blocks?pageToken=AAAA", "INVALID_PAGE_TOKEN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantEBSError(t, a.do("GET", tc.target, nil, nil), 400, "ValidationException", tc.reason)
		})
	}
	wantEBSError(t, a.do("GET", "/snapshots/snap-0123456789abcdef0/blocks", nil, nil), 404, "ResourceNotFoundException", "SNAPSHOT_NOT_FOUND")
	// Any number of hex digits is the model's shape (^snap-[0-9a-f]+$): unknown, not malformed.
	wantEBSError(t, a.do("GET", "/snapshots/snap-0/blocks", nil, nil), 404, "ResourceNotFoundException", "SNAPSHOT_NOT_FOUND")
	// Parameters are checked before the snapshot is looked up, as AWS validates a
	// request against its model first.
	for _, tc := range []struct{ name, target, reason string }{
		{"list, maxResults too large", "/snapshots/snap-0/blocks?maxResults=20000", "INVALID_PARAMETER_VALUE"},
		{"changed, first malformed", "/snapshots/snap-0/changedblocks?firstSnapshotId=snap-zz", "INVALID_SNAPSHOT_ID"},
		{"get, no block token", "/snapshots/snap-0/blocks/0", "INVALID_BLOCK_TOKEN"},
		{"digests, bad start", "/ebsd/v1/snapshots/snap-0/digests?startingBlockIndex=x", "INVALID_PARAMETER_VALUE"},
	} {
		t.Run("unknown snapshot, "+tc.name, func(t *testing.T) {
			wantEBSError(t, a.do("GET", tc.target, nil, nil), 400, "ValidationException", tc.reason)
		})
	}

	// maxResults below 100 is raised to 100; startingBlockIndex skips what is before it.
	var out struct {
		Blocks []struct {
			BlockIndex int64
			BlockToken string
		}
		NextToken string
	}
	rec := a.do("GET", "/snapshots/"+id+"/blocks?maxResults=1&startingBlockIndex=1", nil, nil)
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || rec.Code != 200 {
		t.Fatalf("%d %s %v", rec.Code, rec.Body, err)
	}
	if len(out.Blocks) != 1 || out.Blocks[0].BlockIndex != 5 || out.NextToken != "" {
		t.Fatalf("list from 1: %+v", out)
	}
}

func TestListChangedBlocksRefusesInvalidRequests(t *testing.T) {
	a := newTestAPI(t)
	first := a.completed()
	second := a.start(`{"VolumeSize":1,"ParentSnapshotId":"` + first + `"}`)
	a.put(second, "5", blockOf(6))
	a.complete(second, "1")
	base := "/snapshots/" + second + "/changedblocks?firstSnapshotId=" + first
	for _, tc := range []struct{ name, target, reason string }{
		{"first malformed", "/snapshots/" + second + "/changedblocks?firstSnapshotId=vol-1", "INVALID_SNAPSHOT_ID"},
		{"second malformed", "/snapshots/snap-XYZ/changedblocks", "INVALID_SNAPSHOT_ID"},
		{"maxResults +100", base + "&maxResults=%2B100", "INVALID_PARAMETER_VALUE"},
		{"startingBlockIndex -5", base + "&startingBlockIndex=-5", "INVALID_PARAMETER_VALUE"},
		{"page token of another listing", base + "&pageToken=" + formValue(a.srv.tokens.pageToken("list", second, "", 1)), "INVALID_PAGE_TOKEN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantEBSError(t, a.do("GET", tc.target, nil, nil), 400, "ValidationException", tc.reason)
		})
	}
	rec := a.do("GET", base, nil, nil)
	var out struct {
		ChangedBlocks []struct {
			BlockIndex                        int64
			FirstBlockToken, SecondBlockToken string
		}
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || rec.Code != 200 {
		t.Fatalf("%d %s %v", rec.Code, rec.Body, err)
	}
	if len(out.ChangedBlocks) != 1 || out.ChangedBlocks[0].BlockIndex != 5 || out.ChangedBlocks[0].FirstBlockToken == "" || out.ChangedBlocks[0].SecondBlockToken == "" {
		t.Fatalf("changed blocks: %+v", out)
	}
}

func TestGetSnapshotBlockRefusesInvalidRequests(t *testing.T) {
	a := newTestAPI(t)
	id := a.completed()
	tok := firstBlockToken(t, a, id) // block 0
	other := a.completed()
	for _, tc := range []struct{ name, target, reason string }{
		{"no token", "/snapshots/" + id + "/blocks/0", "INVALID_BLOCK_TOKEN"},
		{"garbage token", "/snapshots/" + id + "/blocks/0?blockToken=AAAA", "INVALID_BLOCK_TOKEN"},
		{"token of another index", "/snapshots/" + id + "/blocks/5?blockToken=" + formValue(tok), "INVALID_BLOCK_TOKEN"},
		{"token of another snapshot", "/snapshots/" + other + "/blocks/0?blockToken=" + formValue(tok), "INVALID_BLOCK_TOKEN"},
		{"malformed id", "/snapshots/snap-XYZ/blocks/0?blockToken=" + formValue(tok), "INVALID_SNAPSHOT_ID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantEBSError(t, a.do("GET", tc.target, nil, nil), 400, "ValidationException", tc.reason)
		})
	}
	rec := a.do("GET", "/snapshots/"+id+"/blocks/0?blockToken="+formValue(tok), nil, nil)
	if rec.Code != 200 || rec.Body.Len() != len(blockOf(1)) || rec.Header()["x-amz-Checksum"][0] != checksumOf(blockOf(1)) {
		t.Fatalf("valid get: %d %v", rec.Code, rec.Header())
	}
}

func TestUnknownOperation(t *testing.T) {
	a := newTestAPI(t)
	wantEBSError(t, a.do("DELETE", "/snapshots/snap-0123456789abcdef0", nil, nil), 404, "UnknownOperationException", "")
}

func firstBlockToken(t *testing.T, a *testAPI, id string) string {
	t.Helper()
	rec := a.do("GET", "/snapshots/"+id+"/blocks", nil, nil)
	var out struct{ Blocks []struct{ BlockToken string } }
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || len(out.Blocks) == 0 {
		t.Fatalf("list %s: %d %s %v", id, rec.Code, rec.Body, err)
	}
	return out.Blocks[0].BlockToken
}

// linearOf is the LINEAR aggregate of blocks written at ascending indexes.
func linearOf(blocks ...[]byte) string {
	var raw []byte
	for _, b := range blocks {
		d := sha256Sum(b)
		raw = append(raw, d[:]...)
	}
	return checksumOf(raw)
}
