package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ebs/types"

	"github.com/ebsd/ebsd/cas"
)

func TestStartSnapshotValidation(t *testing.T) {
	td := newTestDaemon(t)
	c := td.client()
	ctx := context.Background()
	pending := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId)
	big := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(16)}).SnapshotId)
	if _, err := complete(ctx, c, big, nil); err != nil {
		t.Fatal(err)
	}
	tags := func(n int) []types.Tag {
		out := make([]types.Tag, n)
		for i := range out {
			out[i] = types.Tag{Key: aws.String("k" + strconv.Itoa(i)), Value: aws.String("v")}
		}
		return out
	}
	tag := func(k, v string) []types.Tag { return []types.Tag{{Key: aws.String(k), Value: aws.String(v)}} }
	cases := []struct {
		name   string
		in     ebs.StartSnapshotInput
		reason types.ValidationExceptionReason
	}{
		{"volume 0", ebs.StartSnapshotInput{VolumeSize: aws.Int64(0)}, types.ValidationExceptionReasonInvalidVolumeSize},
		{"volume too big", ebs.StartSnapshotInput{VolumeSize: aws.Int64(65537)}, types.ValidationExceptionReasonInvalidVolumeSize},
		{"51 tags", ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), Tags: tags(51)}, types.ValidationExceptionReasonInvalidTag},
		{"duplicate tag", ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), Tags: append(tag("a", "1"), tag("a", "2")...)}, types.ValidationExceptionReasonInvalidTag},
		{"aws: tag", ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), Tags: tag("aws:owner", "x")}, types.ValidationExceptionReasonInvalidTag},
		{"long tag key", ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), Tags: tag(strings.Repeat("k", 128), "x")}, types.ValidationExceptionReasonInvalidTag},
		{"long tag value", ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), Tags: tag("k", strings.Repeat("v", 256))}, types.ValidationExceptionReasonInvalidTag},
		{"long description", ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), Description: aws.String(strings.Repeat("d", 256))}, types.ValidationExceptionReasonInvalidParameterValue},
		{"timeout 9", ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), Timeout: aws.Int32(9)}, types.ValidationExceptionReasonInvalidParameterValue},
		{"timeout 4321", ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), Timeout: aws.Int32(4321)}, types.ValidationExceptionReasonInvalidParameterValue},
		{"token 65 chars", ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), ClientToken: aws.String(strings.Repeat("t", 65))}, types.ValidationExceptionReasonInvalidParameterValue},
		{"token not ASCII", ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), ClientToken: aws.String("tökén")}, types.ValidationExceptionReasonInvalidParameterValue},
		{"parent malformed", ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), ParentSnapshotId: aws.String("vol-123")}, types.ValidationExceptionReasonInvalidSnapshotId},
		{"parent pending", ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), ParentSnapshotId: aws.String(pending)}, types.ValidationExceptionReasonInvalidSnapshotId},
		{"smaller than parent", ebs.StartSnapshotInput{VolumeSize: aws.Int64(8), ParentSnapshotId: aws.String(big)}, types.ValidationExceptionReasonInvalidVolumeSize},
		{"encrypted", ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), Encrypted: aws.Bool(true)}, types.ValidationExceptionReasonInvalidParameterValue},
		{"kms key", ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), KmsKeyArn: aws.String("arn:aws:kms:us-east-1:111122223333:key/x")}, types.ValidationExceptionReasonInvalidParameterValue},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.StartSnapshot(ctx, &tc.in)
			wantValidation(t, err, tc.reason)
		})
	}
	_, err := c.StartSnapshot(ctx, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), ParentSnapshotId: aws.String("snap-0123456789abcdef0")})
	if rnf := wantError[*types.ResourceNotFoundException](t, err); rnf.Reason != types.ResourceNotFoundExceptionReasonSnapshotNotFound {
		t.Fatalf("unknown parent: reason %s", rnf.Reason)
	}
	// What the SDK will not send: no VolumeSize, broken JSON.
	r := td.raw("POST", "/snapshots", map[string]string{"Content-Type": "application/json"}, strings.NewReader(`{"Description":"x"}`), -1)
	wantAWSError(t, r, 400, "ValidationException", "INVALID_PARAMETER_VALUE")
	r = td.raw("POST", "/snapshots", nil, strings.NewReader(`{"VolumeSize":`), -1)
	wantAWSError(t, r, 400, "ValidationException", "INVALID_PARAMETER_VALUE")
	// Nothing refused above was created.
	if n := len(td.store().Snapshots(defaultAccountID)); n != 2 {
		t.Fatalf("%d snapshots after refused starts, want 2", n)
	}
}

func TestPutSnapshotBlockValidation(t *testing.T) {
	td := newTestDaemon(t)
	c := td.client()
	ctx := context.Background()
	id := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId)
	data := block(7)
	put := func(mod func(*ebs.PutSnapshotBlockInput)) error {
		in := &ebs.PutSnapshotBlockInput{
			SnapshotId: aws.String(id), BlockIndex: aws.Int32(1), BlockData: bytes.NewReader(data),
			DataLength: aws.Int32(cas.BlockSize), Checksum: aws.String(checksum(data)),
			ChecksumAlgorithm: types.ChecksumAlgorithmChecksumAlgorithmSha256,
		}
		mod(in)
		_, err := c.PutSnapshotBlock(ctx, in)
		return err
	}
	t.Run("checksum mismatch", func(t *testing.T) {
		err := put(func(in *ebs.PutSnapshotBlockInput) { in.Checksum = aws.String(checksum(block(8))) })
		wantValidation(t, err, types.ValidationExceptionReasonInvalidParameterValue)
		if msg := wantError[*types.ValidationException](t, err).Message; !strings.Contains(aws.ToString(msg), checksum(data)) {
			t.Fatalf("message does not name the computed checksum: %s", aws.ToString(msg))
		}
	})
	t.Run("zero block with wrong checksum", func(t *testing.T) {
		zero := make([]byte, cas.BlockSize)
		err := put(func(in *ebs.PutSnapshotBlockInput) { in.BlockData = bytes.NewReader(zero) })
		wantValidation(t, err, types.ValidationExceptionReasonInvalidParameterValue)
	})
	t.Run("checksum not base64", func(t *testing.T) {
		wantValidation(t, put(func(in *ebs.PutSnapshotBlockInput) { in.Checksum = aws.String("not*base64") }), types.ValidationExceptionReasonInvalidParameterValue)
	})
	t.Run("algorithm", func(t *testing.T) {
		wantValidation(t, put(func(in *ebs.PutSnapshotBlockInput) { in.ChecksumAlgorithm = "MD5" }), types.ValidationExceptionReasonInvalidParameterValue)
	})
	t.Run("index past volume", func(t *testing.T) {
		wantValidation(t, put(func(in *ebs.PutSnapshotBlockInput) { in.BlockIndex = aws.Int32(2048) }), types.ValidationExceptionReasonInvalidBlock)
	})
	t.Run("negative index", func(t *testing.T) {
		wantValidation(t, put(func(in *ebs.PutSnapshotBlockInput) { in.BlockIndex = aws.Int32(-1) }), types.ValidationExceptionReasonInvalidBlock)
	})
	t.Run("data length", func(t *testing.T) {
		short := data[:4096]
		err := put(func(in *ebs.PutSnapshotBlockInput) {
			in.BlockData, in.DataLength, in.Checksum = bytes.NewReader(short), aws.Int32(4096), aws.String(checksum(short))
		})
		wantValidation(t, err, types.ValidationExceptionReasonInvalidBlock)
	})
	t.Run("progress", func(t *testing.T) {
		wantValidation(t, put(func(in *ebs.PutSnapshotBlockInput) { in.Progress = aws.Int32(101) }), types.ValidationExceptionReasonInvalidParameterValue)
	})
	t.Run("unknown snapshot", func(t *testing.T) {
		err := put(func(in *ebs.PutSnapshotBlockInput) { in.SnapshotId = aws.String("snap-0123456789abcdef0") })
		if rnf := wantError[*types.ResourceNotFoundException](t, err); rnf.Reason != types.ResourceNotFoundExceptionReasonSnapshotNotFound {
			t.Fatalf("reason %s", rnf.Reason)
		}
	})
	t.Run("malformed snapshot id", func(t *testing.T) {
		wantValidation(t, put(func(in *ebs.PutSnapshotBlockInput) { in.SnapshotId = aws.String("snap-XYZ") }), types.ValidationExceptionReasonInvalidSnapshotId)
	})

	headers := map[string]string{
		"x-amz-Data-Length": "524288", "x-amz-Checksum": checksum(data), "x-amz-Checksum-Algorithm": "SHA256",
	}
	without := func(name string) map[string]string {
		h := map[string]string{}
		for k, v := range headers {
			if k != name {
				h[k] = v
			}
		}
		return h
	}
	path := "/snapshots/" + id + "/blocks/3"
	for _, name := range []string{"x-amz-Data-Length", "x-amz-Checksum", "x-amz-Checksum-Algorithm"} {
		t.Run("missing "+name, func(t *testing.T) {
			wantAWSError(t, td.raw("PUT", path, without(name), bytes.NewReader(data), cas.BlockSize), 400, "ValidationException", "INVALID_PARAMETER_VALUE")
		})
	}
	t.Run("short body", func(t *testing.T) {
		wantAWSError(t, td.raw("PUT", path, headers, bytes.NewReader(data[:1000]), 1000), 400, "ValidationException", "INVALID_PARAMETER_VALUE")
	})
	t.Run("chunked short body", func(t *testing.T) {
		wantAWSError(t, td.raw("PUT", path, headers, io.MultiReader(bytes.NewReader(data[:1000])), -1), 400, "ValidationException", "INVALID_PARAMETER_VALUE")
	})
	t.Run("chunked long body", func(t *testing.T) {
		long := io.MultiReader(bytes.NewReader(data), strings.NewReader("x"))
		wantAWSError(t, td.raw("PUT", path, headers, long, -1), 400, "ValidationException", "INVALID_PARAMETER_VALUE")
	})
	t.Run("content encoding", func(t *testing.T) {
		h := without("")
		h["Content-Encoding"] = "gzip"
		wantAWSError(t, td.raw("PUT", path, h, bytes.NewReader(data), cas.BlockSize), 400, "ValidationException", "INVALID_CONTENT_ENCODING")
	})
	t.Run("chunked body accepted", func(t *testing.T) {
		r := td.raw("PUT", path, headers, io.MultiReader(bytes.NewReader(data)), -1)
		if r.status != http.StatusCreated || r.header.Get("x-amz-Checksum") != checksum(data) || string(r.body) != "{}" {
			t.Fatalf("chunked put: %d %v %s", r.status, r.header, r.body)
		}
	})
	t.Run("oversized body refused unread", func(t *testing.T) {
		// Announce 64 MiB, send only the headers: the answer must come without the body.
		conn, err := net.Dial("tcp", td.d.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		signed, _ := http.NewRequest("PUT", td.url()+path, nil)
		for k, v := range headers {
			signed.Header.Set(k, v)
		}
		signWith(t, signed, "ebs", unsignedPayload, testAccessKeyID, testSecretAccessKey, time.Now())
		req := "PUT " + path + " HTTP/1.1\r\nHost: " + td.d.addr() + "\r\nContent-Length: 67108864\r\n"
		for k := range signed.Header {
			req += k + ": " + signed.Header.Get(k) + "\r\n"
		}
		if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufioReader(conn), nil)
		if err != nil {
			t.Fatalf("no answer before the body was sent: %v", err)
		}
		if resp.StatusCode != 400 || resp.Header.Get("x-amzn-ErrorType") != "ValidationException" {
			t.Fatalf("oversized body: %d %v", resp.StatusCode, resp.Header)
		}
	})
	// Nothing refused was stored: only the chunked put landed.
	if st, _ := td.store().Stats(ctx); st.MappedBlocks != 1 {
		t.Fatalf("mapped blocks after refused puts: %d, want 1", st.MappedBlocks)
	}
}

func TestCompleteSnapshotValidation(t *testing.T) {
	td := newTestDaemon(t)
	c := td.client()
	ctx := context.Background()
	id := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId)
	blocks := map[int32][]byte{4: block(4)}
	if err := putBlock(ctx, c, id, 4, blocks[4]); err != nil {
		t.Fatal(err)
	}
	_, sum := linear(blocks)
	path := "/snapshots/completion/" + id
	cases := []struct {
		name    string
		headers map[string]string
	}{
		{"no count", map[string]string{}},
		{"negative count", map[string]string{"x-amz-ChangedBlocksCount": "-1"}},
		{"count not a number", map[string]string{"x-amz-ChangedBlocksCount": "one"}},
		{"checksum without algorithm", map[string]string{"x-amz-ChangedBlocksCount": "1", "x-amz-Checksum": sum, "x-amz-Checksum-Aggregation-Method": "LINEAR"}},
		{"algorithm without checksum", map[string]string{"x-amz-ChangedBlocksCount": "1", "x-amz-Checksum-Algorithm": "SHA256"}},
		{"algorithm", map[string]string{"x-amz-ChangedBlocksCount": "1", "x-amz-Checksum": sum, "x-amz-Checksum-Algorithm": "MD5", "x-amz-Checksum-Aggregation-Method": "LINEAR"}},
		{"aggregation method", map[string]string{"x-amz-ChangedBlocksCount": "1", "x-amz-Checksum": sum, "x-amz-Checksum-Algorithm": "SHA256", "x-amz-Checksum-Aggregation-Method": "TREE"}},
		{"count mismatch", map[string]string{"x-amz-ChangedBlocksCount": "2"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantAWSError(t, td.raw("POST", path, tc.headers, nil, 0), 400, "ValidationException", "INVALID_PARAMETER_VALUE")
		})
	}
	if snap, _ := td.store().Snapshot(ctx, defaultAccountID, id); snap.Status != cas.StatusPending {
		t.Fatalf("status after refused completions: %s", snap.Status)
	}
	r := td.raw("POST", "/snapshots/completion/snap-0123456789abcdef0", map[string]string{"x-amz-ChangedBlocksCount": "0"}, nil, 0)
	wantAWSError(t, r, 404, "ResourceNotFoundException", "SNAPSHOT_NOT_FOUND")
	if status, err := complete(ctx, c, id, blocks); err != nil || status != types.StatusCompleted {
		t.Fatalf("complete after refusals: %v %v", status, err)
	}
}

func TestUnknownRoute(t *testing.T) {
	td := newTestDaemon(t)
	r := td.raw("GET", "/nothing/here", nil, nil, 0)
	if r.status != 404 || r.header.Get("x-amzn-ErrorType") == "" {
		t.Fatalf("unknown route: %d %v", r.status, r.header)
	}
}

// What lenient parsing used to let through, end to end with a signed client: a
// signed index "+5", text that is not UTF-8, a description limit counted in bytes, a
// gc "dry run" spelled 1, an EC2 request without Version, a negative digests start.
func TestLenientParametersRefused(t *testing.T) {
	td := newTestDaemon(t)
	c := td.client()
	ctx := context.Background()
	desc := strings.Repeat("😀", 100) // 100 characters, 400 bytes
	out := startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), Description: aws.String(desc)})
	id := aws.ToString(out.SnapshotId)
	if aws.ToString(out.Description) != desc {
		t.Fatalf("description came back as %q", aws.ToString(out.Description))
	}
	data := block(9)
	headers := map[string]string{"x-amz-Data-Length": "524288", "x-amz-Checksum": checksum(data), "x-amz-Checksum-Algorithm": "SHA256"}
	wantAWSError(t, td.raw("PUT", "/snapshots/"+id+"/blocks/+5", headers, bytes.NewReader(data), cas.BlockSize), 400, "ValidationException", "INVALID_BLOCK")
	h := map[string]string{"x-amz-ChangedBlocksCount": "+0"}
	wantAWSError(t, td.raw("POST", "/snapshots/completion/"+id, h, nil, 0), 400, "ValidationException", "INVALID_PARAMETER_VALUE")
	body := "{\"VolumeSize\":1,\"Description\":\"caf\xe9\"}"
	wantAWSError(t, td.raw("POST", "/snapshots", map[string]string{"Content-Type": "application/json"}, strings.NewReader(body), -1), 400, "ValidationException", "INVALID_PARAMETER_VALUE")
	wantAWSError(t, td.raw("POST", "/ebsd/v1/gc?dryRun=1", nil, nil, 0), 400, "ValidationException", "INVALID_PARAMETER_VALUE")

	if err := putBlock(ctx, c, id, 5, data); err != nil {
		t.Fatal(err)
	}
	if _, err := complete(ctx, c, id, map[int32][]byte{5: data}); err != nil {
		t.Fatal(err)
	}
	wantAWSError(t, td.raw("GET", "/ebsd/v1/snapshots/"+id+"/digests?startingBlockIndex=-1", nil, nil, 0), 400, "ValidationException", "INVALID_PARAMETER_VALUE")

	r := td.raw("GET", "/?Action=DescribeSnapshots", nil, nil, 0)
	if r.status != 400 || !strings.Contains(string(r.body), "<Code>MissingParameter</Code>") {
		t.Fatalf("EC2 request without Version: %d %s", r.status, r.body)
	}
	r = td.raw("GET", "/?Action=DescribeSnapshots&Version=2015-10-01", nil, nil, 0)
	if r.status != 400 || !strings.Contains(string(r.body), "<Code>NoSuchVersion</Code>") {
		t.Fatalf("EC2 request with another Version: %d %s", r.status, r.body)
	}
	// Only the valid put landed, at index 5.
	if st, err := td.store().Stats(ctx); err != nil || st.MappedBlocks != 1 {
		t.Fatalf("mapped blocks after refused requests: %+v %v, want 1", st, err)
	}
}
