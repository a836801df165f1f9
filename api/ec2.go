package api

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
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
		s.writeEC2Error(w, r, ec2Err(400, "InvalidParameterValue", "cannot parse the request: %v", err))
		return
	}
	form := r.Form
	if form.Get("DryRun") == "true" {
		s.writeEC2Error(w, r, ec2Err(412, "DryRunOperation", "Request would have succeeded, but DryRun flag is set."))
		return
	}
	var resp any
	var e *ec2Error
	switch action := form.Get("Action"); action {
	case "DescribeSnapshots":
		resp, e = s.describeSnapshots(r, form)
	case "DeleteSnapshot":
		resp, e = s.deleteSnapshot(r, form)
	case "CreateTags":
		resp, e = s.createTags(r, form)
	case "DeleteTags":
		resp, e = s.deleteTags(r, form)
	case "":
		e = ec2Err(400, "MissingAction", "the request has no Action")
	default:
		e = ec2Err(400, "InvalidAction", "the action %s is not valid for this web service (ebsd serves DescribeSnapshots, DeleteSnapshot, CreateTags and DeleteTags)", action)
	}
	if e != nil {
		s.writeEC2Error(w, r, e)
		return
	}
	writeXML(w, http.StatusOK, resp)
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

// formList returns the values of name.1, name.2, … in index order.
func formList(form url.Values, name string) []string {
	type kv struct {
		i int
		v string
	}
	var items []kv
	for k, vs := range form {
		rest, ok := strings.CutPrefix(k, name+".")
		if !ok || len(vs) == 0 {
			continue
		}
		if i, err := strconv.Atoi(rest); err == nil {
			items = append(items, kv{i, vs[0]})
		}
	}
	sort.Slice(items, func(a, b int) bool { return items[a].i < items[b].i })
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.v
	}
	return out
}

// formStructs returns the indices N of name.N.<field> entries, in order.
func formStructs(form url.Values, name string) []string {
	seen := map[int]bool{}
	for k := range form {
		rest, ok := strings.CutPrefix(k, name+".")
		if !ok {
			continue
		}
		idx, _, _ := strings.Cut(rest, ".")
		if i, err := strconv.Atoi(idx); err == nil {
			seen[i] = true
		}
	}
	idx := make([]int, 0, len(seen))
	for i := range seen {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	out := make([]string, len(idx))
	for j, i := range idx {
		out[j] = name + "." + strconv.Itoa(i)
	}
	return out
}
