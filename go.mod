module github.com/bot-bottle/bot-bottle

go 1.26

replace github.com/bot-bottle/bot-bottle/sdk => ./sdk
