package api

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The EC2 Query subset: what tools poll to see a snapshot finish, and snapshot
// lifecycle (spec section 5). Requests are form-encoded (POST) or in the query (GET)
// with Action and Version; answers are XML in the EC2 namespace.

const ec2Namespace = "http://ec2.amazonaws.com/doc/2016-11-15/"

// ec2Error is an EC2-style error: a code such as InvalidSnapshot.NotFound, a message
// and an HTTP status.
type ec2Error struct {
	status  int
	code    string
	message string
}

func ec2Err(status int, code, format string, a ...any) *ec2Error {
	return &ec2Error{status: status, code: code, message: fmt.Sprintf(format, a...)}
}

func (s *Server) ec2(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	if err := r.ParseForm(); err != nil {
		s.writeEC2Error(w, r, ec2Err(400, "InvalidParameterValue", "cannot parse the request: %s", bodyReadFailure(err)))
		return
	}
	resp, e := s.ec2Action(r, r.Form)
	if e != nil {
		s.writeEC2Error(w, r, e)
		return
	}
	writeXML(w, http.StatusOK, resp)
}

// ec2Version is the one EC2 API version ebsd speaks; every SDK and the AWS CLI send it
// with each request (aws-sdk-go-v2 service/ec2 and botocore's ec2/2016-11-15 model).
const ec2Version = "2016-11-15"

// ec2Action checks what every action shares (text, Action, Version, DryRun) and runs
// the action. Action is looked at before Version so that a request with neither (a
// curl of "/") is told the more useful thing.
func (s *Server) ec2Action(r *http.Request, form url.Values) (any, *ec2Error) {
	for k, vs := range form {
		// url.ParseQuery decodes %FF to a byte that is not text; stored in a tag it
		// would come back as U+FFFD.
		if !utf8.ValidString(k) {
			return nil, ec2Err(400, "InvalidParameterValue", "A parameter name is not valid UTF-8: %q", k)
		}
		for _, v := range vs {
			if !utf8.ValidString(v) {
				return nil, ec2Err(400, "InvalidParameterValue", "The value of parameter %s is not valid UTF-8", k)
			}
		}
	}
	action := form.Get("Action")
	if action == "" {
		return nil, ec2Err(400, "MissingAction", "The request must contain the parameter Action")
	}
	// EC2 answers a missing Version with MissingParameter and an unknown one with
	// NoSuchVersion (400, message as AWS words it); ebsd knows only 2016-11-15, so any
	// other version, older or newer, is one it cannot promise to answer in kind.
	switch v := form.Get("Version"); v {
	case ec2Version:
	case "":
		return nil, ec2Err(400, "MissingParameter", "The request must contain the parameter Version")
	default:
		return nil, ec2Err(400, "NoSuchVersion", "The requested version (%s) of service AmazonEC2 does not exist", v)
	}
	dryRun := false
	if v, given := form["DryRun"]; given {
		var ok bool
		if dryRun, ok = parseBool(v[0]); !ok || len(v) != 1 {
			return nil, ec2Err(400, "InvalidParameterValue", "Value (%s) for parameter DryRun is invalid: expecting true or false", v[0])
		}
	}
	switch action {
	case "DescribeSnapshots":
		return s.describeSnapshots(r, form, dryRun)
	case "DeleteSnapshot":
		return s.deleteSnapshot(r, form, dryRun)
	case "CreateTags":
		return s.createTags(r, form, dryRun)
	case "DeleteTags":
		return s.deleteTags(r, form, dryRun)
	}
	return nil, ec2Err(400, "InvalidAction", "The action %s is not valid for this web service (ebsd serves DescribeSnapshots, DeleteSnapshot, CreateTags and DeleteTags)", action)
}

// dryRunSucceeded is EC2's answer to a valid request with DryRun=true: it is given
// after the request's parameters were checked and before anything changes.
func dryRunSucceeded() *ec2Error {
	return ec2Err(412, "DryRunOperation", "Request would have succeeded, but DryRun flag is set.")
}

func (s *Server) writeEC2Error(w http.ResponseWriter, r *http.Request, e *ec2Error) {
	type errorXML struct {
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	}
	body := struct {
		XMLName   xml.Name   `xml:"Response"`
		Errors    []errorXML `xml:"Errors>Error"`
		RequestID string     `xml:"RequestID"`
	}{Errors: []errorXML{{e.code, e.message}}, RequestID: info(r).id}
	w.Header()["x-amzn-ErrorType"] = []string{e.code}
	writeXML(w, e.status, body)
}

func writeXML(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	buf.WriteString(xml.Header)
	if err := xml.NewEncoder(&buf).Encode(v); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/xml;charset=UTF-8")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// formList returns the values of name.1, name.2, … in index order. An index that is
// not a canonical decimal of at least 1 ("name.+1", "name.01", "name.x") is an
// UnknownParameter, as EC2 answers a parameter it does not know: skipping it would
// widen the request (a DescribeSnapshots without its SnapshotId lists everything).
func formList(form url.Values, name string) ([]string, *ec2Error) {
	type kv struct {
		i int64
		v string
	}
	var items []kv
	for k, vs := range form {
		rest, ok := strings.CutPrefix(k, name+".")
		if !ok {
			continue
		}
		i, ok := parseDecimal(rest)
		if !ok || i < 1 {
			return nil, unknownParameter(k)
		}
		if len(vs) != 1 {
			return nil, ec2Err(400, "InvalidParameterValue", "The parameter %s is given %d times", k, len(vs))
		}
		items = append(items, kv{i, vs[0]})
	}
	sort.Slice(items, func(a, b int) bool { return items[a].i < items[b].i })
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.v
	}
	return out, nil
}

// formStructs returns the prefixes name.N of name.N.<field> entries, in index order,
// with the index rules of formList.
func formStructs(form url.Values, name string) ([]string, *ec2Error) {
	seen := map[int64]bool{}
	for k := range form {
		rest, ok := strings.CutPrefix(k, name+".")
		if !ok {
			continue
		}
		idx, _, _ := strings.Cut(rest, ".")
		i, ok := parseDecimal(idx)
		if !ok || i < 1 {
			return nil, unknownParameter(k)
		}
		seen[i] = true
	}
	idx := make([]int64, 0, len(seen))
	for i := range seen {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	out := make([]string, len(idx))
	for j, i := range idx {
		out[j] = name + "." + strconv.FormatInt(i, 10)
	}
	return out, nil
}

func unknownParameter(name string) *ec2Error {
	return ec2Err(400, "UnknownParameter", "The parameter %s is not recognized", name)
}
