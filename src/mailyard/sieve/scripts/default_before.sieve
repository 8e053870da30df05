# mailyard's default global "before" script: spam the filter flagged goes to Junk.
# The user's own script still runs afterwards unless this one stops.
require ["fileinto", "mailbox"];
if header :is "X-Spam-Flag" "YES" {
    fileinto :create "Junk";
    stop;
}
