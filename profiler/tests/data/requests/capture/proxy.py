# A loopback capture proxy: accepts COUNT connections on 127.0.0.1:LISTEN, forwards each
# to 127.0.0.1:TARGET, and writes every recv() chunk of connection N to OUT.N as a record:
# 1 byte direction ('C' client->server, 'S' server->client), 4-byte big-endian length,
# the bytes. Exits when all COUNT connections closed (or after 30 s).
import socket, sys, threading
listen, target, out, count = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('127.0.0.1', listen)); srv.listen(8); srv.settimeout(30)
def conn(n, c):
    s = socket.create_connection(('127.0.0.1', target))
    lock = threading.Lock(); f = open(f'{out}.{n}', 'wb')
    def pump(a, b, d):
        while True:
            data = a.recv(65536)
            if not data:
                try: b.shutdown(socket.SHUT_WR)
                except OSError: pass
                return
            with lock:
                f.write(d + len(data).to_bytes(4, 'big') + data); f.flush()
            b.sendall(data)
    ts = [threading.Thread(target=pump, args=(c, s, b'C')), threading.Thread(target=pump, args=(s, c, b'S'))]
    [t.start() for t in ts]; [t.join() for t in ts]; f.close()
threads = []
for n in range(count):
    c, _ = srv.accept()
    t = threading.Thread(target=conn, args=(n, c)); t.start(); threads.append(t)
[t.join(30) for t in threads]
