package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	ebstypes "github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/ebsd/ebsd/cas"
)

func newEC2Client(endpoint string, adjust ...func(*ec2.Options)) *ec2.Client {
	return ec2.New(ec2.Options{
		Region:           "us-east-1",
		BaseEndpoint:     aws.String(endpoint),
		Credentials:      credentials.NewStaticCredentialsProvider(testAccessKeyID, testSecretAccessKey, ""),
		RetryMaxAttempts: 1,
	}, adjust...)
}

// countingHTTPClient counts the requests it has had answered and closes firstAnswered
// when the first answer arrives (the server has handled that request by then).
type countingHTTPClient struct {
	inner         *http.Client
	answered      atomic.Int32
	firstAnswered chan struct{}
}

func (c *countingHTTPClient) Do(req *http.Request) (*http.Response, error) {
	resp, err := c.inner.Do(req)
	if c.answered.Add(1) == 1 {
		close(c.firstAnswered)
	}
	return resp, err
}

// wantEC2Error fails unless err carries the EC2 error code.
func wantEC2Error(t testing.TB, err error, code string) {
	t.Helper()
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode() != code {
		t.Fatalf("want EC2 error %s, got %v", code, err)
	}
	if apiErr.ErrorMessage() == "" {
		t.Fatalf("EC2 error %s has no message", code)
	}
}

func describeIDs(t testing.TB, c *ec2.Client, in *ec2.DescribeSnapshotsInput) []string {
	t.Helper()
	out, err := c.DescribeSnapshots(context.Background(), in)
	if err != nil {
		t.Fatalf("DescribeSnapshots: %v", err)
	}
	var ids []string
	for _, s := range out.Snapshots {
		ids = append(ids, aws.ToString(s.SnapshotId))
	}
	slices.Sort(ids)
	return ids
}

func sorted(ids ...string) []string { slices.Sort(ids); return ids }

func filter(name string, values ...string) ec2types.Filter {
	return ec2types.Filter{Name: aws.String(name), Values: values}
}

func TestEC2DescribeSnapshots(t *testing.T) {
	td := newTestDaemon(t)
	c := td.client()
	e := newEC2Client(td.url())
	ctx := context.Background()
	tag := func(k, v string) ebstypes.Tag { return ebstypes.Tag{Key: aws.String(k), Value: aws.String(v)} }
	s1 := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), Description: aws.String("web server root"),
		Tags: []ebstypes.Tag{tag("env", "prod"), tag("team", "a")}}).SnapshotId)
	s2 := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(2), Description: aws.String("db data"),
		Tags: []ebstypes.Tag{tag("env", "dev")}}).SnapshotId)
	s3 := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), Tags: []ebstypes.Tag{tag("env", "prod")}}).SnapshotId)
	for _, id := range []string{s1, s2} {
		if _, err := complete(ctx, c, id, nil); err != nil {
			t.Fatal(err)
		}
	}

	if got := describeIDs(t, e, &ec2.DescribeSnapshotsInput{}); !slices.Equal(got, sorted(s1, s2, s3)) {
		t.Fatalf("all: %v", got)
	}
	if got := describeIDs(t, e, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}}); len(got) != 3 {
		t.Fatalf("owner self: %v", got)
	}
	if got := describeIDs(t, e, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"999999999999"}}); len(got) != 0 {
		t.Fatalf("other owner: %v", got)
	}
	out, err := e.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{s1}})
	if err != nil || len(out.Snapshots) != 1 {
		t.Fatalf("by id: %v %v", out, err)
	}
	s := out.Snapshots[0]
	if s.State != ec2types.SnapshotStateCompleted || aws.ToString(s.Progress) != "100%" || aws.ToInt32(s.VolumeSize) != 1 ||
		aws.ToString(s.Description) != "web server root" || aws.ToString(s.OwnerId) != defaultAccountID || aws.ToBool(s.Encrypted) ||
		s.StorageTier != ec2types.StorageTierStandard || s.StartTime == nil || time.Since(*s.StartTime) > time.Minute || len(s.Tags) != 2 {
		t.Fatalf("snapshot as EC2 describes it: %+v", s)
	}
	_, err = e.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{s1, "snap-0123456789abcdef0"}})
	wantEC2Error(t, err, "InvalidSnapshot.NotFound")

	for _, tc := range []struct {
		name    string
		filters []ec2types.Filter
		want    []string
	}{
		{"snapshot-id", []ec2types.Filter{filter("snapshot-id", s2)}, []string{s2}},
		{"status", []ec2types.Filter{filter("status", "pending")}, []string{s3}},
		{"volume-size", []ec2types.Filter{filter("volume-size", "2")}, []string{s2}},
		{"tag:KEY", []ec2types.Filter{filter("tag:env", "prod")}, sorted(s1, s3)},
		{"tag-key", []ec2types.Filter{filter("tag-key", "team")}, []string{s1}},
		{"description wildcard", []ec2types.Filter{filter("description", "*root*")}, []string{s1}},
		{"values are OR", []ec2types.Filter{filter("volume-size", "1", "2")}, sorted(s1, s2, s3)},
		{"filters are AND", []ec2types.Filter{filter("status", "completed"), filter("tag:env", "prod")}, []string{s1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := describeIDs(t, e, &ec2.DescribeSnapshotsInput{Filters: tc.filters}); !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
	_, err = e.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{Filters: []ec2types.Filter{filter("colour", "blue")}})
	wantEC2Error(t, err, "InvalidParameterValue")

	// Pagination with the SDK's paginator: every snapshot once, pages of at most 5.
	for range 12 {
		startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)})
	}
	p := ec2.NewDescribeSnapshotsPaginator(e, &ec2.DescribeSnapshotsInput{MaxResults: aws.Int32(5)})
	seen := map[string]bool{}
	pages := 0
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if len(page.Snapshots) > 5 {
			t.Fatalf("page of %d", len(page.Snapshots))
		}
		for _, s := range page.Snapshots {
			if seen[aws.ToString(s.SnapshotId)] {
				t.Fatalf("%s on two pages", aws.ToString(s.SnapshotId))
			}
			seen[aws.ToString(s.SnapshotId)] = true
		}
	}
	if len(seen) != 15 || pages != 3 {
		t.Fatalf("%d snapshots on %d pages, want 15 on 3", len(seen), pages)
	}
	_, err = e.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{MaxResults: aws.Int32(5), NextToken: aws.String("Zm9yZ2Vk")})
	wantEC2Error(t, err, "InvalidPaginationToken")
	_, err = e.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{MaxResults: aws.Int32(2)})
	wantEC2Error(t, err, "InvalidParameterValue")
}

func TestEC2WaiterTagsAndDelete(t *testing.T) {
	td := newTestDaemon(t)
	c := td.client()
	e := newEC2Client(td.url())
	ctx := context.Background()
	id := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId)
	if err := putBlock(ctx, c, id, 0, block(1)); err != nil {
		t.Fatal(err)
	}
	// The waiter polls DescribeSnapshots until the snapshot completes: it is completed
	// only once the waiter's first poll has been answered (pending), so the waiter must
	// see pending, keep polling, and return when it sees completed.
	polls := &countingHTTPClient{inner: &http.Client{}, firstAnswered: make(chan struct{})}
	w := ec2.NewSnapshotCompletedWaiter(newEC2Client(td.url(), func(o *ec2.Options) { o.HTTPClient = polls }),
		func(o *ec2.SnapshotCompletedWaiterOptions) {
			o.MinDelay, o.MaxDelay = 100*time.Millisecond, 300*time.Millisecond
		})
	waited := make(chan error, 1)
	go func() { waited <- w.Wait(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}}, 30*time.Second) }()
	select {
	case <-polls.firstAnswered:
	case err := <-waited:
		t.Fatalf("waiter returned (%v) before its first DescribeSnapshots was answered", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the waiter made no DescribeSnapshots call in 30 s")
	}
	if status, err := complete(ctx, c, id, map[int32][]byte{0: block(1)}); err != nil || status != ebstypes.StatusCompleted {
		t.Fatalf("CompleteSnapshot: %v %v", status, err)
	}
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("waiter: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the waiter did not return within a minute of completion")
	}
	if n := polls.answered.Load(); n < 2 {
		t.Fatalf("the waiter polled %d times; want at least 2 (pending, then completed)", n)
	}

	tags := func() map[string]string {
		out, err := e.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}})
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, t := range out.Snapshots[0].Tags {
			m[aws.ToString(t.Key)] = aws.ToString(t.Value)
		}
		return m
	}
	if _, err := e.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: []ec2types.Tag{ec2Tag("Name", "root"), ec2Tag("k", "v")}}); err != nil {
		t.Fatal(err)
	}
	if got := tags(); got["Name"] != "root" || got["k"] != "v" || len(got) != 2 {
		t.Fatalf("after CreateTags: %v", got)
	}
	if _, err := e.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: []ec2types.Tag{ec2Tag("k", "v2")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{id}, Tags: []ec2types.Tag{ec2Tag("k", "other")}}); err != nil {
		t.Fatal(err)
	}
	if got := tags(); got["k"] != "v2" {
		t.Fatalf("DeleteTags with another value removed the tag: %v", got)
	}
	if _, err := e.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{id}, Tags: []ec2types.Tag{{Key: aws.String("k")}}}); err != nil {
		t.Fatal(err)
	}
	if got := tags(); len(got) != 1 || got["Name"] != "root" {
		t.Fatalf("after DeleteTags k: %v", got)
	}
	_, err := e.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: []ec2types.Tag{ec2Tag("aws:x", "y")}})
	wantEC2Error(t, err, "InvalidParameterValue")
	many := make([]ec2types.Tag, 50)
	for i := range many {
		many[i] = ec2Tag("t"+strconv.Itoa(i), "v")
	}
	_, err = e.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: many})
	wantEC2Error(t, err, "TagLimitExceeded")
	_, err = e.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{"snap-0123456789abcdef0"}, Tags: []ec2types.Tag{ec2Tag("a", "b")}})
	wantEC2Error(t, err, "InvalidSnapshot.NotFound")

	// Deleting removes it from EC2 and from the EBS direct APIs at once.
	if _, err := e.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(id)}); err != nil {
		t.Fatal(err)
	}
	_, err = e.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}})
	wantEC2Error(t, err, "InvalidSnapshot.NotFound")
	_, err = c.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: aws.String(id)})
	wantError[*ebstypes.ResourceNotFoundException](t, err)
	_, err = e.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(id)})
	wantEC2Error(t, err, "InvalidSnapshot.NotFound")

	// Deleting a pending snapshot aborts it and releases its blocks.
	pending := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId)
	if err := putBlock(ctx, c, pending, 3, block(3)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(pending)}); err != nil {
		t.Fatal(err)
	}
	wantError[*ebstypes.ResourceNotFoundException](t, putBlock(ctx, c, pending, 4, block(4)))
	rep := gcNow(t, td, false)
	if st, _ := td.store().Stats(ctx); st.UniqueBlocks != 0 || st.MappedBlocks != 0 || rep.BlocksReclaimed != 2 {
		t.Fatalf("after deleting everything and GC: %+v, report %+v", st, rep)
	}
	// Unknown actions answer in EC2's error form.
	_, err = e.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{})
	wantEC2Error(t, err, "InvalidAction")
}

// gcNow runs a garbage collection through the admin endpoint.
func gcNow(t testing.TB, td *testDaemon, dryRun bool) cas.GCReport {
	t.Helper()
	path := "/ebsd/v1/gc"
	if dryRun {
		path += "?dryRun=true"
	}
	r := td.raw("POST", path, nil, nil, 0)
	var rep cas.GCReport
	if r.status != 200 || json.Unmarshal(r.body, &rep) != nil {
		t.Fatalf("POST %s: %d %s", path, r.status, r.body)
	}
	return rep
}

// readSnapshot reads a completed snapshot's whole view through the API.
func readSnapshot(t testing.TB, c *ebs.Client, id string) map[int32][]byte {
	t.Helper()
	out := map[int32][]byte{}
	for _, b := range listAll(t, c, id, 1000) {
		out[aws.ToInt32(b.BlockIndex)] = getBlock(t, c, id, aws.ToInt32(b.BlockIndex), b.BlockToken)
	}
	return out
}

func sameBlocks(t testing.TB, got, want map[int32][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d blocks, want %d", len(got), len(want))
	}
	for i, b := range want {
		if !bytes.Equal(got[i], b) {
			t.Fatalf("block %d differs", i)
		}
	}
}

func uniqueBlock(seed int) []byte {
	b := make([]byte, cas.BlockSize)
	copy(b, fmt.Sprintf("unique block %d", seed))
	for i := 4096; i < len(b); i += 512 {
		b[i] = byte(seed*7 + i/512)
	}
	return b
}

// A → B → C; deleting B leaves C byte-identical; deleting everything gives the space back.
func TestDeleteParentThenEverything(t *testing.T) {
	td := newTestDaemon(t, func(c *config) { c.vlogFileSize = 1 << 20; c.compression = cas.CompressNone })
	c := td.client()
	e := newEC2Client(td.url())
	ctx := context.Background()
	layer := func(seeds ...int) map[int32][]byte {
		m := map[int32][]byte{}
		for _, s := range seeds {
			m[int32(s%100)] = uniqueBlock(s)
		}
		return m
	}
	a := writeSnapshot(t, c, "", 1, layer(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15))
	b := writeSnapshot(t, c, a, 1, layer(101, 102, 120))
	cc := writeSnapshot(t, c, b, 1, layer(202, 230))
	wantC := readSnapshot(t, c, cc)
	before := duKB(t, td.cfg.dataDir)

	if _, err := e.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(b)}); err != nil {
		t.Fatal(err)
	}
	if dry := gcNow(t, td, true); dry.BlocksReclaimed != 0 {
		t.Fatalf("with C alive nothing of B may go: %+v", dry)
	}
	gcNow(t, td, false)
	sameBlocks(t, readSnapshot(t, c, cc), wantC)

	for _, id := range []string{a, cc} {
		if _, err := e.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(id)}); err != nil {
			t.Fatal(err)
		}
	}
	rep := gcNow(t, td, false)
	st, _ := td.store().Stats(ctx)
	after := duKB(t, td.cfg.dataDir)
	t.Logf("du of the data dir: %d KiB before, %d KiB after; report %+v", before, after, rep)
	if st.UniqueBlocks != 0 || st.StoredBytes != 0 || rep.BlocksReclaimed != 21 || after >= before/2 {
		t.Fatalf("after deleting everything: %+v, du %d → %d KiB", st, before, after)
	}
}

// adminAnswer is a child daemon's answer to an ebsd extension request, or the
// transport error when there was none.
type adminAnswer struct {
	status int
	body   []byte
	err    error
}

// signedAdminRequest builds a signed request for an ebsd extension path of the daemon
// at addr (a child process, not td).
func signedAdminRequest(t *testing.T, addr, method, path string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	signHTTP(t, req, "ebs")
	return req
}

// sendAdmin sends req and reads the answer. It does not touch t, so it may run off the
// test goroutine; childDeadline bounds it.
func sendAdmin(req *http.Request) adminAnswer {
	ctx, cancel := context.WithTimeout(context.Background(), childDeadline)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		return adminAnswer{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return adminAnswer{status: resp.StatusCode, body: b, err: err}
}

// kill -9 at each stage of a collection — deleted maps released, references marked,
// halfway through the sweep, swept, value log being rewritten — leaves a store in which
// everything acknowledged is intact (completed snapshots read back identical, a pending
// snapshot keeps its puts, deleted snapshots stay deleted), and the next collection
// finishes the job. The child daemon stops its collection at the stage and says so,
// and only then is it killed, so every kill lands exactly where it is meant to.
func TestKill9MidGC(t *testing.T) {
	dir := t.TempDir()
	env := []string{"EBSD_GC_INTERVAL=0", "EBSD_COMPRESSION=none", "EBSD_VLOG_FILE_MB=4"}
	ctx := context.Background()
	seq := func(base, n int) map[int32][]byte {
		m := map[int32][]byte{}
		for i := range n {
			m[int32(i)] = uniqueBlock(base + i)
		}
		return m
	}
	child := startChild(t, dir, env...)
	c := child.client()
	e := newEC2Client("http://" + child.addr)
	// a is deleted but stays needed: b's view reads through it. x is deleted and
	// unneeded, but shares four blocks with keep and one with the pending snapshot p.
	a := writeSnapshot(t, c, "", 1, seq(0, 96))
	b := writeSnapshot(t, c, a, 1, seq(1000, 32))
	keepBlocks := seq(3000, 8)
	xBlocks := seq(2000, 96)
	for i := range int32(4) {
		xBlocks[96+i] = keepBlocks[i]
	}
	x := writeSnapshot(t, c, "", 1, xBlocks)
	keep := writeSnapshot(t, c, "", 1, keepBlocks)
	pBlocks := seq(4000, 16)
	pBlocks[16] = xBlocks[0]
	p := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId)
	for i, blk := range pBlocks {
		if err := putBlock(ctx, c, p, i, blk); err != nil {
			t.Fatalf("put %d into pending %s: %v", i, p, err)
		}
	}
	want := map[string]map[int32][]byte{b: readSnapshot(t, c, b), keep: keepBlocks}
	if len(want[b]) != 96 {
		t.Fatalf("b's view has %d blocks, want 96 (32 of its own over 64 of a)", len(want[b]))
	}
	for _, id := range []string{a, x} {
		if _, err := e.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(id)}); err != nil {
			t.Fatal(err)
		}
	}
	child.terminate(t)
	// Stored: a 96, b 32, keep 8, p 16 and x's 96 (4 of them keep's). Live: all but the
	// 95 of x's that no one else has (its block 0 is p's too).
	const liveBlocks, garbageBlocks = 96 + 32 + 8 + 16 + 1, 95

	intact := func(when string) {
		t.Helper()
		c := child.client()
		for id, blocks := range want {
			sameBlocks(t, readSnapshot(t, c, id), blocks)
		}
		e := newEC2Client("http://" + child.addr)
		for _, id := range []string{a, x} {
			_, err := e.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}})
			if err == nil || !strings.Contains(err.Error(), "InvalidSnapshot.NotFound") {
				t.Fatalf("%s: deleted snapshot %s: %v", when, id, err)
			}
		}
		out, err := e.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{p}})
		if err != nil || len(out.Snapshots) != 1 || out.Snapshots[0].State != ec2types.SnapshotStatePending {
			t.Fatalf("%s: pending snapshot %s: %+v %v", when, p, out, err)
		}
	}

	sweptBefore := 0 // blocks the collection stopped mid-sweep had deleted
	for _, tc := range []struct {
		stage cas.GCStage
		check func(n int) bool
		want  string
	}{
		{cas.GCReleased, func(n int) bool { return n == 1 }, "1 map released (x's; a is b's parent)"},
		{cas.GCMarked, func(n int) bool { return n == liveBlocks }, fmt.Sprintf("%d digests marked", liveBlocks)},
		{cas.GCSweeping, func(n int) bool { sweptBefore = n; return n > 0 && n < garbageBlocks }, "some but not all garbage deleted"},
		{cas.GCSwept, func(n int) bool { return n > 0 && n <= garbageBlocks-sweptBefore }, "the rest of the garbage deleted"},
		{cas.GCValueLogRewritten, func(n int) bool { return n == 1 }, "the first value-log file rewritten"},
	} {
		child = startChild(t, dir, append(env, gcStopEnv+"="+string(tc.stage))...)
		child.await(t, child.expect(gcHookInstalled), "the gc stage hook")
		stopped := child.expect(gcStoppedLine)
		req := signedAdminRequest(t, child.addr, "POST", "/ebsd/v1/gc")
		answered := make(chan adminAnswer, 1)
		go func() { answered <- sendAdmin(req) }()
		var m []string
		select {
		case m = <-stopped:
		case ans := <-answered:
			t.Fatalf("the collection answered %d %s (%v) without stopping at %s:\n%s", ans.status, ans.body, ans.err, tc.stage, child.logText())
		case <-child.exited:
			t.Fatalf("daemon exited (%v) before the collection reached %s:\n%s", child.waitErr, tc.stage, child.logText())
		case <-time.After(childDeadline):
			t.Fatalf("the collection did not reach %s:\n%s", tc.stage, child.logText())
		}
		child.kill9(t)
		// The kill landed inside the collection: it never answered, never finished.
		select {
		case ans := <-answered:
			if ans.err == nil {
				t.Fatalf("killed at %s, the collection still answered %d %s", tc.stage, ans.status, ans.body)
			}
		case <-time.After(childDeadline):
			t.Fatalf("the gc request to a killed daemon did not fail")
		}
		if strings.Contains(child.logText(), `msg="garbage collection"`) {
			t.Fatalf("killed at %s, the daemon still logged a finished collection:\n%s", tc.stage, child.logText())
		}
		if n, err := strconv.Atoi(m[2]); m[1] != string(tc.stage) || err != nil || !tc.check(n) {
			t.Fatalf("stopped at %s n=%s; want %s: %s", m[1], m[2], tc.stage, tc.want)
		}
		t.Logf("killed at %s (n=%s) after %d stage reports", tc.stage, m[2], len(gcStageLine.FindAllString(child.logText(), -1)))

		child = startChild(t, dir, env...)
		intact("after kill -9 at " + string(tc.stage))
		child.terminate(t)
	}

	// The next collection finishes: only the garbage is gone, everything live is there.
	child = startChild(t, dir, env...)
	ans := sendAdmin(signedAdminRequest(t, child.addr, "POST", "/ebsd/v1/gc"))
	var rep cas.GCReport
	if ans.err != nil || ans.status != http.StatusOK || json.Unmarshal(ans.body, &rep) != nil {
		t.Fatalf("collection after the kills: %d %s %v", ans.status, ans.body, ans.err)
	}
	t.Logf("final collection: %+v", rep)
	intact("after the final collection")
	ans = sendAdmin(signedAdminRequest(t, child.addr, "GET", "/ebsd/v1/stats"))
	var st struct {
		UniqueBlocks *int64 `json:"uniqueBlocks"`
	}
	if ans.err != nil || ans.status != http.StatusOK || json.Unmarshal(ans.body, &st) != nil || st.UniqueBlocks == nil {
		t.Fatalf("stats: %d %s %v", ans.status, ans.body, ans.err)
	}
	if *st.UniqueBlocks != liveBlocks {
		t.Fatalf("%d unique blocks stored after the final collection, want the %d live ones", *st.UniqueBlocks, liveBlocks)
	}
	// The pending snapshot kept every acknowledged put: it completes (count and LINEAR
	// aggregate match) and reads back what was put.
	c = child.client()
	if status, err := complete(ctx, c, p, pBlocks); err != nil || status != ebstypes.StatusCompleted {
		t.Fatalf("completing the pending snapshot after the kills: %v %v", status, err)
	}
	sameBlocks(t, readSnapshot(t, c, p), pBlocks)
	child.terminate(t)
}

// Some tools send EC2 Query requests as GET with the parameters in the query string.
func TestEC2QueryOverGET(t *testing.T) {
	td := newTestDaemon(t)
	id := aws.ToString(startSnapshot(t, td.client(), &ebs.StartSnapshotInput{VolumeSize: aws.Int64(3)}).SnapshotId)
	r := td.raw("GET", "/?Action=DescribeSnapshots&Version=2016-11-15&SnapshotId.1="+id, nil, nil, 0)
	body := string(r.body)
	if r.status != 200 || !strings.Contains(body, "<DescribeSnapshotsResponse") || !strings.Contains(body, "<snapshotId>"+id+"</snapshotId>") ||
		!strings.Contains(body, "<volumeSize>3</volumeSize>") || !strings.Contains(body, "<status>pending</status>") {
		t.Fatalf("GET DescribeSnapshots: %d\n%s", r.status, body)
	}
	r = td.raw("GET", "/?Action=DescribeSnapshots&Version=2016-11-15&SnapshotId.1=snap-0123456789abcdef0", nil, nil, 0)
	if r.status != 400 || !strings.Contains(string(r.body), "<Code>InvalidSnapshot.NotFound</Code>") {
		t.Fatalf("GET DescribeSnapshots of an unknown id: %d\n%s", r.status, r.body)
	}
}

// ec2Tag is an EC2 tag of key k and value v.
func ec2Tag(k, v string) ec2types.Tag { return ec2types.Tag{Key: aws.String(k), Value: aws.String(v)} }
