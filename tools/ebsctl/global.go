package main

import (
	"flag"
	"os"
)

// globalOptions are the flags every subcommand shares.
type globalOptions struct {
	endpoint string
	region   string
	json     bool
}

func (g *globalOptions) register(fs *flag.FlagSet) {
	def := os.Getenv("AWS_ENDPOINT_URL_EBS")
	if def == "" {
		def = os.Getenv("AWS_ENDPOINT_URL")
	}
	if def == "" {
		def = "http://127.0.0.1:8600"
	}
	fs.StringVar(&g.endpoint, "endpoint-url", def, "EBS endpoint (env AWS_ENDPOINT_URL_EBS or AWS_ENDPOINT_URL)")
	fs.StringVar(&g.region, "region", os.Getenv("AWS_REGION"), "AWS region (env AWS_REGION)")
	fs.BoolVar(&g.json, "json", false, "print JSON instead of text")
}
