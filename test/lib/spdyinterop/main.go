// spdyinterop drives Narwhal's streaming server with moby/spdystream, the SPDY library of
// kubelet and client-go, to prove the two interoperate. Test tool only (test/integration).
//
// Usage: spdyinterop exec URL [stdin]    -> JSON {"stdout","stderr","error"}; "stdin" sends our stdin
//        spdyinterop portforward URL PORT N -> JSON [{"data","error"}...]
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"io/ioutil"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"

	"github.com/moby/spdystream"
)

type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func dial(raw string, protocol string) *spdystream.Connection {
	u, err := url.Parse(raw)
	check(err)
	conn, err := net.Dial("tcp", u.Host)
	check(err)
	req, _ := http.NewRequest("POST", raw, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "SPDY/3.1")
	req.Header.Add("X-Stream-Protocol-Version", protocol)
	check(req.Write(conn))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	check(err)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		fail(fmt.Sprintf("upgrade refused: %s", resp.Status))
	}
	sc, err := spdystream.NewConnection(&bufConn{conn, br}, false)
	check(err)
	go sc.Serve(spdystream.NoOpStreamHandler)
	return sc
}

func stream(c *spdystream.Connection, h http.Header) *spdystream.Stream {
	s, err := c.CreateStream(h, nil, false)
	check(err)
	check(s.Wait())
	return s
}

func main() {
	switch os.Args[1] {
	case "exec":
		c := dial(os.Args[2], "v4.channel.k8s.io")
		errS := stream(c, http.Header{"Streamtype": {"error"}})
		var in *spdystream.Stream
		if len(os.Args) > 3 && os.Args[3] == "stdin" {
			in = stream(c, http.Header{"Streamtype": {"stdin"}})
		}
		out := stream(c, http.Header{"Streamtype": {"stdout"}})
		errOut := stream(c, http.Header{"Streamtype": {"stderr"}})
		if in != nil {
			data, err := ioutil.ReadAll(os.Stdin)
			check(err)
			_, err = in.Write(data)
			check(err)
			check(in.Close())
		}
		var wg sync.WaitGroup
		var o, e []byte
		wg.Add(2)
		go func() { defer wg.Done(); o, _ = ioutil.ReadAll(out) }()
		go func() { defer wg.Done(); e, _ = ioutil.ReadAll(errOut) }()
		wg.Wait()
		status, _ := ioutil.ReadAll(errS)
		c.Close()
		emit(map[string]string{"stdout": string(o), "stderr": string(e), "error": string(status)})
	case "portforward":
		c := dial(os.Args[2], "portforward.k8s.io")
		n, _ := strconv.Atoi(os.Args[4])
		results := make([]map[string]string, n)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				h := http.Header{"Port": {os.Args[3]}, "Requestid": {strconv.Itoa(i)}}
				h.Set("Streamtype", "error")
				es := stream(c, h.Clone())
				h.Set("Streamtype", "data")
				ds := stream(c, h.Clone())
				_, err := ds.Write([]byte(fmt.Sprintf("GET /%d HTTP/1.0\r\n\r\n", i)))
				check(err)
				check(ds.Close())
				data, _ := ioutil.ReadAll(ds)
				msg, _ := ioutil.ReadAll(es)
				results[i] = map[string]string{"data": string(data), "error": string(msg)}
			}(i)
		}
		wg.Wait()
		c.Close()
		emit(results)
	}
}

func emit(v interface{}) {
	b, err := json.Marshal(v)
	check(err)
	os.Stdout.Write(b)
}

func check(err error) {
	if err != nil && err != io.EOF {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, msg)
	os.Exit(1)
}
