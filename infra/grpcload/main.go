// Command grpcload plays many gRPC clients for shelfproof's service benchmarks: a closed loop of unary
// calls of one method over a few HTTP/2 connections, each call a request from the spec in turn (already
// serialized protobuf, so no generated code is needed here). It reads a JSON spec on stdin and writes
// latencies and status counts as JSON on stdout. Written in Go so that the load itself costs little
// of a small machine's CPU (a Python client spends about as much per call as the server it measures).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

type spec struct {
	Target      string   `json:"target"`   // host:port, loopback
	Method      string   `json:"method"`   // /package.Service/Method
	Requests    [][]byte `json:"requests"` // serialized request messages (base64 in JSON), used in turn
	Concurrency int      `json:"concurrency"`
	Connections int      `json:"connections"`
	Seconds     float64  `json:"seconds"`
	Warmup      float64  `json:"warmup"`
	DeadlineS   float64  `json:"deadline_s"`
}

// bytesCodec sends the spec's bytes as they are and keeps the answer's bytes unread: the server sees
// an ordinary protobuf call (content-type application/grpc+proto).
type bytesCodec struct{}

func (bytesCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (bytesCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = data
	return nil
}
func (bytesCodec) Name() string { return "proto" }

type result struct {
	latencies []float64
	codes     map[string]int
}

func client(n int, s spec, conn *grpc.ClientConn, measureFrom, end time.Time, out chan<- result, wg *sync.WaitGroup) {
	defer wg.Done()
	r := result{codes: map[string]int{}}
	deadline := time.Duration(s.DeadlineS * float64(time.Second))
	for i := n; time.Now().Before(end); i += s.Concurrency {
		request := s.Requests[i%len(s.Requests)]
		var reply []byte
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		started := time.Now()
		err := conn.Invoke(ctx, s.Method, &request, &reply, grpc.ForceCodec(bytesCodec{}))
		cancel()
		if started.Before(measureFrom) {
			continue
		}
		r.codes[status.Code(err).String()]++
		if err == nil {
			r.latencies = append(r.latencies, time.Since(started).Seconds())
		}
	}
	out <- r
}

func main() {
	var s spec
	if err := json.NewDecoder(os.Stdin).Decode(&s); err != nil || s.Target == "" || s.Method == "" || len(s.Requests) == 0 || s.Concurrency < 1 {
		fmt.Fprintln(os.Stderr, "grpcload: bad spec on stdin:", err)
		os.Exit(2)
	}
	if s.Connections < 1 {
		s.Connections = 1
	}
	if s.DeadlineS <= 0 {
		s.DeadlineS = 5
	}
	conns := make([]*grpc.ClientConn, s.Connections)
	for i := range conns {
		// One connection per ClientConn (a distinct authority-free dial each time).
		conn, err := grpc.NewClient(s.Target, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)))
		if err != nil {
			fmt.Fprintln(os.Stderr, "grpcload:", err)
			os.Exit(2)
		}
		conn.Connect()
		conns[i] = conn
	}
	start := time.Now()
	measureFrom := start.Add(time.Duration(s.Warmup * float64(time.Second)))
	end := measureFrom.Add(time.Duration(s.Seconds * float64(time.Second)))
	out := make(chan result, s.Concurrency)
	var wg sync.WaitGroup
	for n := 0; n < s.Concurrency; n++ {
		wg.Add(1)
		go client(n, s, conns[n%len(conns)], measureFrom, end, out, &wg)
	}
	wg.Wait()
	close(out)
	latencies, codes := []float64{}, map[string]int{}
	for r := range out {
		latencies = append(latencies, r.latencies...)
		for code, count := range r.codes {
			codes[code] += count
		}
	}
	for _, conn := range conns {
		conn.Close()
	}
	var usage syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &usage)
	cpu := float64(usage.Utime.Sec+usage.Stime.Sec) + float64(usage.Utime.Usec+usage.Stime.Usec)/1e6
	json.NewEncoder(os.Stdout).Encode(map[string]any{"latencies": latencies, "codes": codes, "measured_s": s.Seconds, "cpu_s": cpu})
}
