package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"
)

// opTimeout bounds every request: a daemon that stops answering is a finding, not a hang.
const opTimeout = 60 * time.Second

// soak is one run: the daemon's supervisor, the ledger and the workers' shared settings.
type soak struct {
	sup     *supervisor
	led     *ledger
	mount   string
	seed    uint64
	maxLive int

	scrubState scrubAvailability
}

// errAnswered marks a failure the daemon answered (an AWS error or an unexpected HTTP
// status): not a kill's doing, so never retried.
var errAnswered = errors.New("answered")

// do runs op against the serving daemon until it gets an answer. A failure without an
// answer (connection refused or reset, a body cut short) is retried on the next
// generation when a kill happened since op began; otherwise it is unexpected and
// returned. An answered error is returned as is.
func (s *soak) do(ctx context.Context, name string, op func(ctx context.Context, g *generation) error) error {
	for {
		g, err := s.sup.current(ctx)
		if err != nil {
			return err
		}
		octx, cancel := context.WithTimeout(ctx, opTimeout)
		err = op(octx, g)
		cancel()
		s.led.ops.Add(1)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if answered(err) {
			return err
		}
		if !s.sup.changedSince(g.n) {
			s.led.unexpected("%s (daemon generation %d, no kill since): %v", name, g.n, err)
			return err
		}
		s.led.expected.Add(1)
	}
}

// answered reports whether err is the daemon's answer (as opposed to no answer: do has
// already recorded those as unexpected, or retried them across a kill).
func answered(err error) bool {
	var api smithy.APIError
	return errors.As(err, &api) || errors.Is(err, errAnswered)
}

// uploader writes snapshots, new and incremental, until ctx ends.
func (s *soak) uploader(ctx context.Context, worker int) {
	rng := rand.New(rand.NewPCG(s.seed, uint64(100+worker)))
	for n := 0; ctx.Err() == nil; n++ {
		if s.led.live() >= s.maxLive {
			// The deleter catches up; uploads wait rather than grow the final check.
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		s.uploadOne(ctx, rng, fmt.Sprintf("soak-%x-%d-%d", s.seed, worker, n))
	}
}

func (s *soak) uploadOne(ctx context.Context, rng *rand.Rand, token string) {
	view := map[int32]digest{}
	var parent *snapshot
	if rng.IntN(10) < 6 {
		if p, ok := s.led.acquire(rng); ok {
			parent = p
			for i, d := range p.view {
				view[i] = d
			}
		}
	}
	in := startInput(token, parent)
	var id string
	err := s.do(ctx, "StartSnapshot", func(ctx context.Context, g *generation) error {
		out, err := g.ebs.StartSnapshot(ctx, in)
		if err == nil {
			id = aws.ToString(out.SnapshotId)
		}
		return err
	})
	if parent != nil {
		s.led.release(parent)
	}
	if err != nil {
		if answered(err) {
			s.led.unexpected("StartSnapshot %s: %v", token, err)
		}
		return
	}
	s.led.started(id, token, aws.ToString(in.ParentSnapshotId))
	g0, _ := s.sup.current(ctx)

	// Own writes: a few distinct indices, some zero blocks, some blocks from a small
	// shared pool (duplicates across snapshots), the rest new.
	written := map[int32]digest{}
	for _, idx := range rng.Perm(indexSpace)[:2+rng.IntN(12)] {
		var seed uint64
		switch r := rng.IntN(10); {
		case r == 0:
			seed = 0
		case r < 4:
			seed = 1 + uint64(rng.IntN(24)) // the shared pool
			s.led.dupPuts.Add(1)
		default:
			seed = rng.Uint64() | 1<<63
		}
		data := blockData(seed)
		d := sha256.Sum256(data)
		err := s.do(ctx, "PutSnapshotBlock", func(ctx context.Context, g *generation) error {
			_, err := g.ebs.PutSnapshotBlock(ctx, &ebs.PutSnapshotBlockInput{
				SnapshotId: aws.String(id), BlockIndex: aws.Int32(int32(idx)),
				BlockData: bytes.NewReader(data), DataLength: aws.Int32(blockSize),
				Checksum: aws.String(base64.StdEncoding.EncodeToString(d[:])), ChecksumAlgorithm: types.ChecksumAlgorithmChecksumAlgorithmSha256,
			})
			return err
		})
		if err != nil {
			if answered(err) {
				s.led.unexpected("PutSnapshotBlock %s[%d]: %v", id, idx, err)
			}
			return
		}
		s.led.puts.Add(1)
		s.led.putBytes.Add(blockSize)
		if seed == 0 {
			s.led.zeroPuts.Add(1)
		}
		written[int32(idx)] = d
		view[int32(idx)] = d
	}

	// A kill since the start: the same token must still answer the same snapshot.
	if g0 != nil && s.sup.changedSince(g0.n) {
		if !s.checkToken(ctx, token) {
			return
		}
	}

	count, sum := linear(written)
	var status types.Status
	err = s.do(ctx, "CompleteSnapshot", func(ctx context.Context, g *generation) error {
		out, err := g.ebs.CompleteSnapshot(ctx, &ebs.CompleteSnapshotInput{
			SnapshotId: aws.String(id), ChangedBlocksCount: aws.Int32(count),
			Checksum: aws.String(sum), ChecksumAlgorithm: types.ChecksumAlgorithmChecksumAlgorithmSha256,
			ChecksumAggregationMethod: types.ChecksumAggregationMethodChecksumAggregationLinear,
		})
		if err == nil {
			status = out.Status
		}
		return err
	})
	switch {
	case err != nil && ctx.Err() != nil:
		return
	case err != nil && !answered(err):
		return // recorded as unexpected by do
	case err != nil:
		// Every put was acknowledged: a count or aggregate mismatch means one was lost.
		s.led.lose("CompleteSnapshot %s refused after %d acknowledged puts: %v", id, count, err)
		return
	case status != types.StatusCompleted:
		s.led.unexpected("CompleteSnapshot %s answered %q", id, status)
		return
	}
	s.led.complete(id, view)
	if rng.IntN(4) == 0 {
		s.checkToken(ctx, token)
	}
}

func startInput(token string, parent *snapshot) *ebs.StartSnapshotInput {
	in := &ebs.StartSnapshotInput{VolumeSize: aws.Int64(volumeGiB), ClientToken: aws.String(token), Description: aws.String("soak"), Timeout: aws.Int32(60)}
	if parent != nil {
		in.ParentSnapshotId = aws.String(parent.id)
	}
	return in
}

// checkToken retries StartSnapshot with an acknowledged token and its parameters: the
// answer must be the id it was acknowledged with. It reports whether the check ran.
func (s *soak) checkToken(ctx context.Context, token string) bool {
	want := s.led.tokenID(token)
	s.led.mu.Lock()
	parent := s.led.snaps[want].parent
	s.led.mu.Unlock()
	in := startInput(token, nil)
	if parent != "" {
		in.ParentSnapshotId = aws.String(parent)
	}
	var got string
	err := s.do(ctx, "StartSnapshot (token retry)", func(ctx context.Context, g *generation) error {
		out, err := g.ebs.StartSnapshot(ctx, in)
		if err == nil {
			got = aws.ToString(out.SnapshotId)
		}
		return err
	})
	if err != nil {
		if answered(err) {
			s.led.lose("client token %s (acknowledged as %s) now fails: %v", token, want, err)
		}
		return false
	}
	s.led.tokenRetries.Add(1)
	if got != want {
		s.led.lose("client token %s answered %s, acknowledged as %s", token, got, want)
	}
	return true
}

// linear is the LINEAR aggregate of the blocks a snapshot wrote, as a client sends it.
func linear(blocks map[int32]digest) (int32, string) {
	idx := make([]int32, 0, len(blocks))
	for i := range blocks {
		idx = append(idx, i)
	}
	sort.Slice(idx, func(a, b int) bool { return idx[a] < idx[b] })
	h := sha256.New()
	for _, i := range idx {
		d := blocks[i]
		h.Write(d[:])
	}
	return int32(len(idx)), base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// reader reads random live snapshots through the API and the FUSE file and compares
// them with the ledger.
func (s *soak) reader(ctx context.Context, worker int) {
	rng := rand.New(rand.NewPCG(s.seed, uint64(200+worker)))
	for ctx.Err() == nil {
		snap, ok := s.led.acquire(rng)
		if !ok {
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		sample := sampleIndices(rng, snap, 6)
		if rng.IntN(2) == 0 {
			if err := s.readAPI(ctx, snap, sample); err == nil {
				s.led.apiSnapReads.Add(1)
			}
		} else {
			g, err := s.sup.current(ctx)
			if err == nil {
				if err := s.readFUSE(snap, sample); err != nil {
					if s.sup.changedSince(g.n) && killedMount(err) {
						s.led.interruptedReads.Add(1)
					} else {
						s.led.unexpected("FUSE read of %s (daemon generation %d, no kill since): %v", snap.id, g.n, err)
					}
				} else {
					s.led.fuseSnapReads.Add(1)
				}
			}
		}
		s.led.release(snap)
	}
}

// killedMount reports whether a FUSE error is what a killed daemon leaves: the
// connection aborted, the dead mount, or the bare directory before the next mount.
// EIO is never one: the daemon answered, with an error.
func killedMount(err error) bool {
	return errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ENOTCONN) || errors.Is(err, fs.ErrNotExist)
}

// sampleIndices picks up to n indices of a snapshot's view, and one it never wrote
// (which must read as zeros through FUSE).
func sampleIndices(rng *rand.Rand, snap *snapshot, n int) []int32 {
	var all []int32
	for i := range snap.view {
		all = append(all, i)
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	rng.Shuffle(len(all), func(a, b int) { all[a], all[b] = all[b], all[a] })
	if n >= 0 && len(all) > n {
		all = all[:n]
	}
	for try := 0; try < 8; try++ {
		i := int32(rng.IntN(indexSpace * 2))
		if _, ok := snap.view[i]; !ok {
			all = append(all, i)
			break
		}
	}
	return all
}

// readAPI lists a snapshot's blocks (the listing must hold exactly the ledger's
// indices) and reads the sampled ones with GetSnapshotBlock.
func (s *soak) readAPI(ctx context.Context, snap *snapshot, sample []int32) error {
	var tokens map[int32]string
	err := s.do(ctx, "ListSnapshotBlocks", func(ctx context.Context, g *generation) error {
		tokens = map[int32]string{}
		var next *string
		for {
			out, err := g.ebs.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: aws.String(snap.id), NextToken: next})
			if err != nil {
				return err
			}
			for _, b := range out.Blocks {
				tokens[aws.ToInt32(b.BlockIndex)] = aws.ToString(b.BlockToken)
			}
			if next = out.NextToken; next == nil {
				return nil
			}
		}
	})
	if err != nil {
		if answered(err) {
			s.led.lose("snapshot %s cannot be listed: %v", snap.id, err)
		}
		return err
	}
	for i := range snap.view {
		if _, ok := tokens[i]; !ok {
			s.led.lose("snapshot %s: block %d missing from ListSnapshotBlocks", snap.id, i)
		}
	}
	for i := range tokens {
		if _, ok := snap.view[i]; !ok {
			s.led.lose("snapshot %s: ListSnapshotBlocks lists block %d it never had", snap.id, i)
		}
	}
	for _, i := range sample {
		want, ok := snap.view[i]
		if !ok {
			continue // unwritten indices have no token; FUSE checks them
		}
		var got digest
		err := s.do(ctx, "GetSnapshotBlock", func(ctx context.Context, g *generation) error {
			out, err := g.ebs.GetSnapshotBlock(ctx, &ebs.GetSnapshotBlockInput{SnapshotId: aws.String(snap.id), BlockIndex: aws.Int32(i), BlockToken: aws.String(tokens[i])})
			if err != nil {
				return err
			}
			defer out.BlockData.Close()
			h := sha256.New()
			if _, err := io.Copy(h, out.BlockData); err != nil {
				return fmt.Errorf("reading block data: %w", err)
			}
			copy(got[:], h.Sum(nil))
			return nil
		})
		if err != nil {
			if answered(err) {
				s.led.lose("snapshot %s block %d cannot be read: %v", snap.id, i, err)
			}
			return err
		}
		s.led.apiBlockReads.Add(1)
		if got != want {
			s.led.lose("snapshot %s block %d: API read %x, acknowledged %x", snap.id, i, got[:6], want[:6])
		}
	}
	return nil
}

// readFUSE reads the sampled blocks of a snapshot's image file. An error is returned for
// the caller to judge (a kill makes the mount fail); a wrong byte is a loss.
func (s *soak) readFUSE(snap *snapshot, sample []int32) error {
	f, err := os.Open(filepath.Join(s.mount, snap.id))
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() != volumeGiB<<30 {
		s.led.lose("FUSE file %s is %d bytes, want %d", snap.id, st.Size(), int64(volumeGiB)<<30)
	}
	buf := make([]byte, blockSize)
	for _, i := range sample {
		if _, err := f.ReadAt(buf, int64(i)*blockSize); err != nil {
			return fmt.Errorf("block %d: %w", i, err)
		}
		want, ok := snap.view[i]
		if !ok {
			want = zeroDigest
		}
		s.led.fuseBlockReads.Add(1)
		if got := sha256.Sum256(buf); got != want {
			s.led.lose("snapshot %s block %d: FUSE read %x, acknowledged %x", snap.id, i, got[:6], want[:6])
		}
	}
	return nil
}

// deleter deletes random completed snapshots with EC2 DeleteSnapshot: often enough to
// keep the live set under maxLive, and now and then below it.
func (s *soak) deleter(ctx context.Context) {
	rng := rand.New(rand.NewPCG(s.seed, 300))
	for ctx.Err() == nil {
		if s.led.live() <= s.maxLive*3/4 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(300+rng.IntN(1200)) * time.Millisecond):
			}
			if rng.IntN(2) == 0 {
				continue
			}
		}
		snap, ok := s.led.pickForDelete(rng)
		if !ok {
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		s.deleteOne(ctx, snap)
	}
}

func (s *soak) deleteOne(ctx context.Context, snap *snapshot) {
	attempts := 0
	err := s.do(ctx, "DeleteSnapshot", func(ctx context.Context, g *generation) error {
		attempts++
		_, err := g.ec2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(snap.id)})
		return err
	})
	var api smithy.APIError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return // in doubt: the final check skips it
	case attempts > 1 && errors.As(err, &api) && api.ErrorCode() == "InvalidSnapshot.NotFound":
		// An earlier attempt was cut by a kill after the delete took effect.
	case answered(err):
		s.led.lose("DeleteSnapshot %s (completed, acknowledged): %v", snap.id, err)
		return
	default:
		return // no answer and no kill: do recorded it as unexpected; the delete is in doubt
	}
	s.led.deleted(snap)
	s.led.deletes.Add(1)
}

// admin sends a signed POST to one of ebsd's own endpoints, as ebsctl signs them.
func (s *soak) admin(ctx context.Context, g *generation, path string) (int, []byte, error) {
	const emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.endpoint+path, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("X-Amz-Content-Sha256", emptyPayloadHash)
	creds := aws.Credentials{AccessKeyID: s.sup.akid, SecretAccessKey: s.sup.secret}
	if err := v4.NewSigner().SignHTTP(ctx, creds, req, emptyPayloadHash, "ebs", region, time.Now()); err != nil {
		return 0, nil, fmt.Errorf("signing %s: %w", path, err)
	}
	resp, err := g.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, fmt.Errorf("reading the answer to %s: %w", path, err)
	}
	return resp.StatusCode, body, nil
}

// collector runs garbage collection every few seconds.
func (s *soak) collector(ctx context.Context) {
	rng := rand.New(rand.NewPCG(s.seed, 400))
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(1500+rng.IntN(3000)) * time.Millisecond):
		}
		var rep struct {
			BlocksReclaimed int64 `json:"blocksReclaimed"`
		}
		err := s.do(ctx, "POST /ebsd/v1/gc", func(ctx context.Context, g *generation) error {
			status, body, err := s.admin(ctx, g, "/ebsd/v1/gc")
			if err != nil {
				return err
			}
			if status != http.StatusOK {
				return fmt.Errorf("%w: %d %s", errAnswered, status, body)
			}
			return json.Unmarshal(body, &rep)
		})
		if err != nil {
			if answered(err) {
				s.led.unexpected("gc: %v", err)
			}
			continue
		}
		s.led.gcRuns.Add(1)
		s.led.gcReclaimedBlocks.Add(rep.BlocksReclaimed)
	}
}

type scrubAvailability struct {
	unavailable chan struct{} // closed when the daemon answered 404
}

// scrubber asks for a scrub every few seconds. A daemon without the endpoint (404) has
// no scrub: the soak says so and goes on without. A report naming a bad or missing
// block is a loss.
func (s *soak) scrubber(ctx context.Context) {
	rng := rand.New(rand.NewPCG(s.seed, 500))
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(3000+rng.IntN(4000)) * time.Millisecond):
		}
		var status int
		var body []byte
		err := s.do(ctx, "POST /ebsd/v1/scrub", func(ctx context.Context, g *generation) error {
			var err error
			status, body, err = s.admin(ctx, g, "/ebsd/v1/scrub")
			return err
		})
		switch {
		case err != nil:
			continue // no answer: retried across kills, or recorded as unexpected by do
		case status == http.StatusNotFound:
			close(s.scrubState.unavailable)
			return
		case status != http.StatusOK:
			s.led.unexpected("scrub: %d %s", status, body)
			continue
		}
		s.noteScrub(body)
	}
}

// noteScrub counts a scrub report and records what it found wrong as losses.
func (s *soak) noteScrub(body []byte) {
	var rep struct {
		BlocksChecked int64 `json:"blocksChecked"`
	}
	_ = json.Unmarshal(body, &rep) // an unreadable report is a finding of scrubFindings
	s.led.scrubRuns.Add(1)
	s.led.scrubBlocks.Add(rep.BlocksChecked)
	if f := scrubFindings(body); len(f) > 0 {
		s.led.scrubFindingsCount.Add(int64(len(f)))
		s.led.lose("scrub reports %s: %s", strings.Join(f, ", "), body)
	}
}

// scrubFindings picks the non-zero counts of a scrub report whose names say something is
// wrong. The report's exact shape belongs to the scrub endpoint; any field named like a
// problem counts.
func scrubFindings(body []byte) []string {
	var rep map[string]any
	if json.Unmarshal(body, &rep) != nil {
		return []string{"an unreadable report: " + string(body)}
	}
	var out []string
	for k, v := range rep {
		n, isNum := v.(float64)
		lk := strings.ToLower(k)
		bad := strings.Contains(lk, "corrupt") || strings.Contains(lk, "mismatch") || strings.Contains(lk, "missing") || strings.Contains(lk, "bad")
		if isNum && bad && n > 0 {
			out = append(out, fmt.Sprintf("%s=%v", k, n))
		}
	}
	sort.Strings(out)
	return out
}
