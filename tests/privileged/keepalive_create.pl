# A docker.sock client that connects, waits longer than SL-C2-009's 5 s,
# then creates and starts a container on that same connection (HTTP/1.1
# keep-alive): no connect near the start. Usage: perl keepalive_create.pl
# SOCKET IMAGE WAIT_SECONDS. Prints "started <id>".
use strict;
use warnings;
use IO::Socket::UNIX;
use Socket qw(SOCK_STREAM);

my ($path, $image, $wait) = @ARGV;
my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM, Peer => $path) or die "connect $path: $!\n";
sleep $wait;
my $body = qq({"Image":"$image","Cmd":["sleep","5"],"HostConfig":{"NetworkMode":"none"}});
print $s "POST /containers/create HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
  . "Content-Length: " . length($body) . "\r\n\r\n$body";
my $resp = "";
until ($resp =~ /"Id":"([0-9a-f]{64})"/) {
    sysread($s, my $chunk, 4096) or die "create: connection closed: $resp\n";
    $resp .= $chunk;
}
my ($id) = $resp =~ /"Id":"([0-9a-f]{64})"/;  # ($1 of the loop's test is gone after it)
print $s "POST /containers/$id/start HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\n\r\n";
sysread($s, my $r, 4096) or die "start: connection closed\n";
die "start: $r\n" unless $r =~ m{^HTTP/1\.1 204};
print "started $id\n";
